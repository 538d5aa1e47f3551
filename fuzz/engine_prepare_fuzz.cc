// Fuzz target: request validation and key building (Engine::Prepare), and the
// memory backend's decision for what passes, on a snapshot built once from a
// fixed config with memory tenants. The input supplies every field of a hit:
// identifier, throttle uid, tenant, cost and an optional inline spec.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/strings/match.h"
#include "app/backends.h"
#include "backend/memory/memory_backend.h"
#include "clock/clock.h"
#include "config/config.h"
#include "engine/engine.h"
#include "fuzz_input.h"
#include "metrics/metrics.h"

namespace {

constexpr char kConfig[] = R"(
throttles:
  - uid: api_quota
    limit: 10
    period: 1m
  - uid: burst
    limit: 3
    period: 1s
  - uid: huge
    limit: 3602879701896396
    period: 1ms
tenants:
  - name: default
    backend: memory
  - name: gold
    backend: memory
    prefix: gold
    quota_multiplier: 2.5
    allow_inline_specs: false
default_tenant: default
max_identifier_bytes: 64
)";

struct World {
  traffik::FakeClock clock;
  std::unique_ptr<traffik::MemoryBackend> memory;
  traffik::Metrics metrics;
  std::unique_ptr<traffik::Engine> engine;

  World() {
    traffik::MemoryBackendOptions options;
    options.max_buckets = 4096;  // bounded however long the fuzzer runs
    options.sweep_interval_ms = 0;
    memory = std::make_unique<traffik::MemoryBackend>(clock, options);
    traffik::RegisterBuiltinBackends();
    absl::StatusOr<traffik::Config> config = traffik::ParseConfig(kConfig, "fuzz");
    if (!config.ok()) {
      std::fprintf(stderr, "fuzz config: %s\n", config.status().ToString().c_str());
      std::abort();
    }
    auto snapshot = traffik::Snapshot::Build(
        *config,
        [this](const traffik::TenantConfig&) -> absl::StatusOr<traffik::Backend*> {
          return memory.get();
        },
        metrics);
    if (!snapshot.ok()) {
      std::fprintf(stderr, "fuzz snapshot: %s\n", snapshot.status().ToString().c_str());
      std::abort();
    }
    engine = std::make_unique<traffik::Engine>(*snapshot);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();  // one snapshot for the whole run
  traffik::fuzz::FuzzInput in(data, size);
  const uint8_t flags = in.Byte();
  traffik::HitRequest request;
  request.cost = static_cast<uint32_t>(in.Integer(flags & 0x10 ? 4 : 1));
  request.has_spec = (flags & 0x01) != 0;
  request.spec_limit = in.Integer(flags & 0x02 ? 8 : 2);
  request.spec_period_ms = in.Integer(flags & 0x04 ? 8 : 3);
  // Debian's abseil has its own string_view (not std's).
  auto view = [](std::string_view v) { return absl::string_view(v.data(), v.size()); };
  request.tenant = view(in.Field(80));
  request.throttle_uid = view(in.Field(300));
  request.identifier = view(in.Rest());
  world->clock.AdvanceMs(flags >> 5);  // 0..7 ms between hits

  traffik::PreparedHit hit;
  const absl::Status status = world->engine->Prepare(request, &hit);
  if (!status.ok()) {
    switch (status.code()) {
      case absl::StatusCode::kInvalidArgument:
      case absl::StatusCode::kNotFound:
      case absl::StatusCode::kPermissionDenied:
      case absl::StatusCode::kOutOfRange:
        return 0;
      default:
        std::abort();  // not a documented answer of Prepare
    }
  }
  // Accepted: within the limits the engine promises, and decidable.
  if (request.identifier.empty() || request.identifier.size() > 64) std::abort();
  if (hit.backend == nullptr || hit.key.empty() || hit.rate.capacity == 0 ||
      hit.rate.period_ms == 0 || hit.cost == 0 || hit.cost > hit.rate.capacity) {
    std::abort();
  }
  if (!absl::StrContains(hit.key, request.identifier)) std::abort();
  bool answered = false;
  hit.backend->Decide(hit.key, hit.rate, hit.cost,
                      [&](absl::StatusOr<traffik::Decision> decision) {
                        answered = true;
                        if (!decision.ok()) return;  // e.g. the bucket cap
                        if (decision->limit != hit.rate.capacity) std::abort();
                        if (decision->allowed && decision->wait_ms != 0) std::abort();
                      });
  if (!answered) std::abort();  // the memory backend answers inline
  return 0;
}
