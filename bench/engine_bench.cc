// Google Benchmark for the decision engine's hot path (no gRPC): a decision
// on one hot key, on 100k and 1M random keys (single thread and all cores),
// key building, and config resolution.
//
//   build/bench/traffik_engine_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "backend/memory/memory_backend.h"
#include "bucket/token_bucket.h"
#include "clock/clock.h"
#include "config/config.h"
#include "engine/engine.h"
#include "engine/key.h"
#include "metrics/metrics.h"

namespace traffik {
namespace {

const Rate kRate{1'000'000, 1000};  // never refuses: measures the full path

MemoryBackendOptions NoSweep(uint64_t max_buckets) {
  MemoryBackendOptions o;
  o.max_buckets = max_buckets;
  o.sweep_interval_ms = 0;
  return o;
}

// Pure arithmetic: one decision on an existing bucket.
void BM_BucketArithmetic(benchmark::State& state) {
  BucketState s{kRate.capacity * kRate.period_ms, 0};
  int64_t now = 0;
  for (auto _ : state) {
    Decision d = Decide(&s, kRate, 1, ++now, &s);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_BucketArithmetic);

// One hot key in the memory backend (lookup + lock + arithmetic).
void BM_MemoryHotKey(benchmark::State& state) {
  static MemoryBackend* backend = nullptr;
  if (state.thread_index() == 0)
    backend = new MemoryBackend(SteadyClock::Get(), NoSweep(1 << 20));
  const std::string key = "default:{api:user:42}";
  for (auto _ : state) {
    absl::StatusOr<Decision> d = backend->DecideNow(key, kRate, 1);
    benchmark::DoNotOptimize(d);
  }
  if (state.thread_index() == 0) {
    delete backend;
    backend = nullptr;
  }
}
BENCHMARK(BM_MemoryHotKey)->Threads(1)->Threads(2)->UseRealTime();

// Random keys out of a population of state.range(0), pre-populated, so the
// cost includes cache misses on a large table. Each key is built in a reused
// buffer, as the server builds it from the request (no cache miss on input).
void FormatKey(uint64_t i, std::string* key) {
  key->assign("default:{api:user:");
  char digits[24];
  char* end = absl::numbers_internal::FastIntToBuffer(i, digits);
  key->append(digits, static_cast<size_t>(end - digits));
  key->push_back('}');
}

void BM_MemoryRandomKeys(benchmark::State& state) {
  static MemoryBackend* backend = nullptr;
  const int64_t population = state.range(0);
  if (state.thread_index() == 0) {
    backend = new MemoryBackend(SteadyClock::Get(), NoSweep(2 * population + 1024));
    std::string key;
    for (int64_t i = 0; i < population; ++i) {
      FormatKey(static_cast<uint64_t>(i), &key);
      (void)backend->DecideNow(key, kRate, 1);
    }
  }
  std::mt19937_64 rng(1234 + state.thread_index());
  std::vector<uint32_t> order(1 << 12);
  for (auto& o : order) o = static_cast<uint32_t>(rng() % population);
  size_t i = 0;
  std::string key;
  for (auto _ : state) {
    FormatKey(order[i++ & 0xfff], &key);
    absl::StatusOr<Decision> d = backend->DecideNow(key, kRate, 1);
    benchmark::DoNotOptimize(d);
  }
  if (state.thread_index() == 0) {
    delete backend;
    backend = nullptr;
  }
}
BENCHMARK(BM_MemoryRandomKeys)
    ->Arg(100'000)
    ->Arg(1'000'000)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime()
    ->Unit(benchmark::kNanosecond);

// An engine whose tenants all use one memory backend.
struct EngineOnMemory {
  explicit EngineOnMemory(const Config& config)
      : memory(SteadyClock::Get(), NoSweep(1024)),
        engine(*Snapshot::Build(
            config,
            [this](const TenantConfig&) -> absl::StatusOr<Backend*> { return &memory; },
            metrics)) {}
  MemoryBackend memory;
  Metrics metrics;
  Engine engine;
};

// Building a bucket key into a reused string.
void BM_BuildKey(benchmark::State& state) {
  std::string key;
  for (auto _ : state) {
    BuildBucketKey("default", "api_quota", "203.0.113.9:/api/search", &key);
    benchmark::DoNotOptimize(key.data());
  }
}
BENCHMARK(BM_BuildKey);

// Resolving a request against the config snapshot: validation, tenant and
// throttle lookup, key building (Engine::Prepare), without the backend.
void BM_ConfigLookup(benchmark::State& state) {
  Config config = DefaultConfig();
  for (int i = 0; i < 100; ++i) {
    config.throttles.push_back({absl::StrCat("throttle_", i), 1000, 60'000});
  }
  for (int i = 0; i < 10; ++i) {
    TenantConfig t;
    t.name = t.prefix = absl::StrCat("tenant_", i);
    config.tenants.push_back(t);
  }
  EngineOnMemory setup(config);
  Engine& engine = setup.engine;
  HitRequest request;
  request.identifier = "203.0.113.9:/api/search";
  request.throttle_uid = "throttle_42";
  request.tenant = "tenant_7";
  PreparedHit hit;
  for (auto _ : state) {
    absl::Status s = engine.Prepare(request, &hit);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_ConfigLookup);

// The whole engine path for one decision on a hot key: Prepare + memory
// backend + Finish (metrics), as the gRPC handler runs it.
void BM_EngineDecision(benchmark::State& state) {
  Config config = DefaultConfig();
  config.throttles.push_back({"api", 1'000'000, 1000});
  EngineOnMemory setup(config);
  Engine& engine = setup.engine;
  MemoryBackend& memory = setup.memory;
  HitRequest request;
  request.identifier = "user:42";
  request.throttle_uid = "api";
  PreparedHit hit;
  for (auto _ : state) {
    (void)engine.Prepare(request, &hit);
    absl::StatusOr<Decision> d =
        Engine::Finish(hit, memory.DecideNow(hit.key, hit.rate, hit.cost));
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_EngineDecision);

}  // namespace
}  // namespace traffik

BENCHMARK_MAIN();
