// Fuzz target: the YAML config parser (ParseConfig) and the duration parser,
// fed arbitrary text. A config it accepts must satisfy the invariants Config
// promises (config/config.h); a rejection must be kInvalidArgument.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "app/backends.h"
#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool registered = (traffik::RegisterBuiltinBackends(), true);
  (void)registered;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  absl::StatusOr<int64_t> ms = traffik::ParseDurationMs(text.substr(0, 64));
  if (ms.ok() && *ms < 0) std::abort();

  absl::StatusOr<traffik::Config> config = traffik::ParseConfig(text, "fuzz.yaml");
  if (!config.ok()) {
    if (config.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (config->tenants.empty() || config->max_identifier_bytes < 1 ||
      config->max_batch_size < 1) {
    std::abort();
  }
  bool default_found = false;
  for (const auto& tenant : config->tenants) {
    default_found |= tenant.name == config->default_tenant;
  }
  if (!default_found) std::abort();
  for (const auto& throttle : config->throttles) {
    if (throttle.limit == 0 || throttle.period_ms == 0) std::abort();
    if (!traffik::ValidateThrottleUid(throttle.uid).ok()) std::abort();
  }
  return 0;
}
