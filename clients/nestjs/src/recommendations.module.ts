/** `RecommendationsModule`: import it with `forRoot(options)` or `forRootAsync(...)`, then inject `RecommendationsService`. */

import { HttpModule } from '@nestjs/axios';
import { type DynamicModule, Module } from '@nestjs/common';

import {
  RECOMMENDATIONS_OPTIONS,
  type RecommendationsModuleAsyncOptions,
  type RecommendationsModuleOptions,
  resolveOptions,
} from './options';
import { RecommendationsService } from './recommendations.service';

@Module({})
export class RecommendationsModule {
  /** The module with fixed options; `isGlobal` makes the service injectable in every module. */
  static forRoot(options: RecommendationsModuleOptions & { isGlobal?: boolean }): DynamicModule {
    const { isGlobal, ...clientOptions } = options;
    return {
      module: RecommendationsModule,
      global: isGlobal ?? false,
      imports: [HttpModule],
      providers: [{ provide: RECOMMENDATIONS_OPTIONS, useValue: resolveOptions(clientOptions) }, RecommendationsService],
      exports: [RecommendationsService],
    };
  }

  /** The module with options from a factory (e.g. `ConfigService`), resolved and checked when the app starts. */
  static forRootAsync(options: RecommendationsModuleAsyncOptions): DynamicModule {
    return {
      module: RecommendationsModule,
      global: options.isGlobal ?? false,
      imports: [...(options.imports ?? []), HttpModule],
      providers: [
        {
          provide: RECOMMENDATIONS_OPTIONS,
          useFactory: async (...args: unknown[]) => resolveOptions(await options.useFactory(...args)),
          inject: options.inject ?? [],
        },
        RecommendationsService,
      ],
      exports: [RecommendationsService],
    };
  }
}
