"""Exceptions of the ML core, one per way a stage can refuse its input."""


class DatasetError(ValueError):
    """A dataset is malformed or unusable; ``problems`` lists each one (with file and line where known)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        shown = self.problems[:20]
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(message + "".join(f"\n  {p}" for p in shown) + more)


class TrainingError(RuntimeError):
    """A fit failed or produced an unusable model (NaN or infinite values, degenerate data)."""


class ArtifactError(RuntimeError):
    """A model artifact is missing, partial, corrupt, foreign or fails its checksum."""
