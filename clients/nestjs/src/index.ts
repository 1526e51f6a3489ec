/** The recsvc NestJS client: module, service, options, API types and typed errors. */

export * from './errors';
export * from './options';
export * from './recommendations.module';
export * from './recommendations.service';
export * from './types';
