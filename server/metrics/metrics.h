#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace traffik {

// A latency histogram for the hot path: fixed buckets, one relaxed atomic
// increment per bucket hit, no lock (prometheus-cpp's Histogram takes a mutex
// per Observe). Thread-safe.
class LatencyHistogram {
 public:
  // Upper bounds in seconds.
  static constexpr std::array<double, 14> kBoundsSeconds = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
      0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1.0};

  void ObserveNanos(int64_t nanos);
  // Fills `metric` (a histogram ClientMetric) with cumulative counts.
  void Snapshot(prometheus::ClientMetric* metric) const;

 private:
  std::array<std::atomic<uint64_t>, kBoundsSeconds.size() + 1> counts_{};  // last: +Inf
  std::atomic<uint64_t> sum_nanos_{0};
};

// The RPCs whose latency is measured.
enum class Rpc { kShouldThrottle = 0, kShouldThrottleBatch = 1, kShouldRateLimit = 2 };

// Counters for one (tenant, throttle) pair, resolved once when a config
// snapshot is built so a decision only increments (no label lookup).
struct DecisionCounters {
  prometheus::Counter* allowed = nullptr;
  prometheus::Counter* throttled = nullptr;
};

// Why a call was refused by auth (auth/): the fixed label values of
// traffik_auth_failures_total{reason}. Never a caller-supplied value.
enum class AuthFailure {
  kMissingCredential = 0,  // "missing_credential": no key, no verified client cert
  kUnknownCredential = 1,  // "unknown_credential": bad scheme/format, or no such caller
  kTenantNotGranted = 2,   // "tenant_not_granted": a tenant outside the caller's grant
  kNotAdmin = 3,           // "not_admin": AdminService by a caller without admin: true
};
inline constexpr int kAuthFailureCount = 4;
// The label value of `failure`.
const char* AuthFailureName(AuthFailure failure);
// Counters of traffik_envoy_decisions_total for one (domain, rule) pair,
// resolved once when a config snapshot is built (no label lookup per
// request). `result` is one of the five below.
struct EnvoyDecisionCounters {
  prometheus::Counter* ok = nullptr;
  prometheus::Counter* over_limit = nullptr;
  prometheus::Counter* shadow_over_limit = nullptr;  // shadow_mode, answered OK
  prometheus::Counter* unlimited = nullptr;
  prometheus::Counter* no_match = nullptr;
};

// The server's Prometheus metrics. Series (names follow Prometheus
// conventions; identifiers are never labels):
//   traffik_decisions_total{tenant,throttle,result}  counter
//   traffik_decision_duration_seconds{rpc}           histogram
//   traffik_errors_total{code}                       counter (gRPC code names)
//   traffik_backend_errors_total{tenant,backend,policy} counter
//   traffik_buckets{backend}                         gauge
//   traffik_bucket_evictions_total{backend}          counter
//   traffik_bucket_rejections_total{backend,tenant}  counter
//   traffik_config_reloads_total{result}             counter (success, error)
//   traffik_config_last_reload_success_timestamp_seconds gauge
//   traffik_config_info{config_hash}                 gauge, always 1, one series
//   traffik_admin_requests_total{rpc,code}           counter (AdminService)
//   traffik_auth_failures_total{reason}              counter (AuthFailure names)
//   traffik_caller_requests_total{caller}            counter (configured caller names)
//   traffik_tls_certificate_reloads_total{result}    counter (success, error)
//   traffik_envoy_decisions_total{domain,rule,result} counter (Envoy RLS; labels
//       come from the config only: see ForEnvoyRule)
// Thread-safe; the increment paths take no lock.
class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Slow path (a locked label lookup): call when building a config snapshot.
  DecisionCounters ForThrottle(const std::string& tenant, const std::string& throttle);

  // Slow path: the Envoy RLS counters of a configured `domain` and `rule`
  // (a rule's config path, envoy::Rule::path). Label values come from the
  // loaded config files, never from a request, so their number is bounded by
  // the config: a request for an unknown domain is counted under domain=""
  // rule="", descriptors matching no rule under rule="".
  EnvoyDecisionCounters ForEnvoyRule(const std::string& domain, const std::string& rule);

  void ObserveLatency(Rpc rpc, int64_t nanos) {
    latency_[static_cast<int>(rpc)].ObserveNanos(nanos);
  }
  void CountError(absl::StatusCode code);

  // Counts one traffik.v1.AdminService call by method name and answer code
  // (gRPC code name, "OK" included). Slow path (a locked label lookup): admin
  // calls are rare.
  void CountAdminRequest(const std::string& rpc, absl::StatusCode code);

  // Counts one call refused by auth (lock-free).
  void CountAuthFailure(AuthFailure failure) {
    auth_failures_[static_cast<int>(failure)]->Increment();
  }
  // Slow path: the counter of calls authenticated as the configured caller
  // `caller` (built with a config snapshot; names are bounded by the config).
  prometheus::Counter* ForCaller(const std::string& caller);

  // Slow path: the counter of decisions whose backend failed, for one tenant.
  // `policy` is "allow" or "deny"; `backend` is the backend's Name().
  prometheus::Counter* ForBackendErrors(const std::string& tenant,
                                        const std::string& backend,
                                        const std::string& policy);

  // Reports a backend's bucket count and evictions at scrape time. Replaces
  // an earlier source of the same backend name.
  void AddBucketSource(std::string backend, std::function<uint64_t()> buckets,
                       std::function<uint64_t()> evictions);

  // Reports at scrape time how many new buckets of `tenant` (a configured
  // name) `backend` refused because the tenant's share was full. Replaces an
  // earlier source of the same backend and tenant.
  void AddRejectionSource(std::string backend, std::string tenant,
                          std::function<uint64_t()> rejections);

  // Configuration reloads: counts one (result "success" or "error").
  void CountConfigReload(bool success);
  // The gRPC port's certificate and key files changed: counts one (result
  // "success": the new pair is served, or "error": it is broken and the
  // previous pair keeps serving).
  void CountTlsCertificateReload(bool success);
  // When the configuration last loaded successfully (startup or reload),
  // seconds since the Unix epoch.
  void SetConfigReloadSuccessTime(double unix_seconds);
  // traffik_config_info{config_hash=`sha256_hex`} 1, replacing the previous
  // hash's series (exactly one series once set).
  void SetConfigHash(const std::string& sha256_hex);

  // Renders every series in the text exposition format (for tests and tools).
  std::string RenderText() const;

 private:
  class RuntimeCollector;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* decisions_;
  prometheus::Family<prometheus::Counter>* errors_;
  prometheus::Family<prometheus::Counter>* backend_errors_;
  prometheus::Family<prometheus::Counter>* admin_requests_;
  prometheus::Family<prometheus::Counter>* envoy_decisions_;
  std::array<prometheus::Counter*, 17> error_counters_{};  // by absl::StatusCode
  std::array<prometheus::Counter*, kAuthFailureCount> auth_failures_{};  // by AuthFailure
  prometheus::Family<prometheus::Counter>* caller_requests_;
  prometheus::Counter* reloads_success_;
  prometheus::Counter* reloads_error_;
  prometheus::Counter* tls_reloads_success_;
  prometheus::Counter* tls_reloads_error_;
  prometheus::Gauge* last_reload_success_;
  prometheus::Family<prometheus::Gauge>* config_info_;
  absl::Mutex config_info_mu_;
  prometheus::Gauge* config_info_series_ ABSL_GUARDED_BY(config_info_mu_) = nullptr;
  std::array<LatencyHistogram, 3> latency_;
  std::shared_ptr<RuntimeCollector> runtime_;
};

}  // namespace traffik
