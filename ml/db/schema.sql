-- The shipped schema of the five tables of the dataset format (DESIGN sections 3 and 4).
--
-- Used by demo data, tests and the docker image; a real deployment keeps its own schema and points the
-- SQL_* queries at it. Idempotent: every statement may run again on an existing database.
-- Ids are opaque strings of at most 128 characters; timestamps are stored in UTC.

CREATE TABLE IF NOT EXISTS users (
    id         varchar(128) PRIMARY KEY,
    role       text         NOT NULL DEFAULT '',
    created_at timestamptz  NOT NULL
);

CREATE TABLE IF NOT EXISTS communities (
    id   varchar(128) PRIMARY KEY,
    name text         NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS follows (
    user_id      varchar(128) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    community_id varchar(128) NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    created_at   timestamptz  NOT NULL,
    PRIMARY KEY (user_id, community_id)
);
-- The primary key serves lookups by user; this one serves the foreign key's checks on community deletes.
CREATE INDEX IF NOT EXISTS follows_community_id_idx ON follows (community_id);

CREATE TABLE IF NOT EXISTS posts (
    id           varchar(128) PRIMARY KEY,
    community_id varchar(128) NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    -- No foreign key on purpose: a post outlives its author's deleted account (the reader maps an unknown
    -- author to none).
    author_id    varchar(128),
    tags         text[]       NOT NULL DEFAULT '{}',
    created_at   timestamptz  NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_community_id_idx ON posts (community_id);

CREATE TABLE IF NOT EXISTS interactions (
    id         bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    varchar(128) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    post_id    varchar(128) NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    type       text         NOT NULL CHECK (type IN ('view', 'like', 'comment')),
    created_at timestamptz  NOT NULL
);
-- The reader scans whole tables, so interactions carry only the indexes their foreign keys' cascades need:
-- every further index slows the bulk import of millions of rows.
CREATE INDEX IF NOT EXISTS interactions_user_id_idx ON interactions (user_id);
CREATE INDEX IF NOT EXISTS interactions_post_id_idx ON interactions (post_id);
