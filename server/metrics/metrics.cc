#include "metrics/metrics.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "base/mutex.h"
#include "prometheus/gauge.h"
#include "prometheus/text_serializer.h"

namespace traffik {

void LatencyHistogram::ObserveNanos(int64_t nanos) {
  const double seconds = static_cast<double>(nanos) * 1e-9;
  size_t i = 0;
  while (i < kBoundsSeconds.size() && seconds > kBoundsSeconds[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(static_cast<uint64_t>(nanos > 0 ? nanos : 0),
                       std::memory_order_relaxed);
}

void LatencyHistogram::Snapshot(prometheus::ClientMetric* metric) const {
  uint64_t cumulative = 0;
  metric->histogram.bucket.clear();
  for (size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < kBoundsSeconds.size()
                             ? kBoundsSeconds[i]
                             : std::numeric_limits<double>::infinity();
    metric->histogram.bucket.push_back(bucket);
  }
  metric->histogram.sample_count = cumulative;
  metric->histogram.sample_sum =
      static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) * 1e-9;
}

// Renders the lock-free series at scrape time.
class Metrics::RuntimeCollector final : public prometheus::Collectable {
 public:
  explicit RuntimeCollector(const std::array<LatencyHistogram, 3>* latency)
      : latency_(latency) {}

  void AddBucketSource(std::string backend, std::function<uint64_t()> buckets,
                       std::function<uint64_t()> evictions) {
    MutexLock lock(&mu_);
    // One series per backend: a backend rebuilt by a reload replaces its
    // predecessor's source.
    for (Source& s : sources_) {
      if (s.backend == backend) {
        s.buckets = std::move(buckets);
        s.evictions = std::move(evictions);
        return;
      }
    }
    sources_.push_back({std::move(backend), std::move(buckets), std::move(evictions)});
  }

  void AddRejectionSource(std::string backend, std::string tenant,
                          std::function<uint64_t()> rejections) {
    MutexLock lock(&mu_);
    // One series per (backend, tenant): a tenant re-added by a reload
    // replaces its old source.
    for (RejectionSource& s : rejection_sources_) {
      if (s.backend == backend && s.tenant == tenant) {
        s.rejections = std::move(rejections);
        return;
      }
    }
    rejection_sources_.push_back(
        {std::move(backend), std::move(tenant), std::move(rejections)});
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    prometheus::MetricFamily latency{
        "traffik_decision_duration_seconds",
        "Time from receiving a decision RPC to answering it, in seconds.",
        prometheus::MetricType::Histogram,
        {}};
    const char* rpc_names[] = {"ShouldThrottle", "ShouldThrottleBatch",
                               "ShouldRateLimit"};
    for (int i = 0; i < 3; ++i) {
      prometheus::ClientMetric m;
      m.label.push_back({"rpc", rpc_names[i]});
      (*latency_)[i].Snapshot(&m);
      latency.metric.push_back(std::move(m));
    }
    out.push_back(std::move(latency));

    prometheus::MetricFamily buckets{"traffik_buckets",
                                     "Token buckets currently stored, by backend.",
                                     prometheus::MetricType::Gauge,
                                     {}};
    prometheus::MetricFamily evictions{
        "traffik_bucket_evictions_total",
        "Buckets dropped to make room for a new one, by backend. Only buckets that "
        "are full again are dropped (no state is lost); a steady rate means the "
        "memory budget is in use.",
        prometheus::MetricType::Counter,
        {}};
    prometheus::MetricFamily rejections{
        "traffik_bucket_rejections_total",
        "New buckets refused (RESOURCE_EXHAUSTED) because the tenant's share of the "
        "backend was full, by backend and tenant.",
        prometheus::MetricType::Counter,
        {}};
    {
      MutexLock lock(&mu_);
      for (const Source& s : sources_) {
        prometheus::ClientMetric b;
        b.label.push_back({"backend", s.backend});
        b.gauge.value = static_cast<double>(s.buckets());
        buckets.metric.push_back(std::move(b));
        prometheus::ClientMetric e;
        e.label.push_back({"backend", s.backend});
        e.counter.value = static_cast<double>(s.evictions());
        evictions.metric.push_back(std::move(e));
      }
      for (const RejectionSource& s : rejection_sources_) {
        prometheus::ClientMetric r;
        r.label.push_back({"backend", s.backend});
        r.label.push_back({"tenant", s.tenant});
        r.counter.value = static_cast<double>(s.rejections());
        rejections.metric.push_back(std::move(r));
      }
    }
    out.push_back(std::move(buckets));
    out.push_back(std::move(evictions));
    if (!rejections.metric.empty()) out.push_back(std::move(rejections));
    return out;
  }

 private:
  struct Source {
    std::string backend;
    std::function<uint64_t()> buckets;
    std::function<uint64_t()> evictions;
  };
  struct RejectionSource {
    std::string backend;
    std::string tenant;
    std::function<uint64_t()> rejections;
  };
  const std::array<LatencyHistogram, 3>* latency_;
  mutable Mutex mu_;
  std::vector<Source> sources_ ABSL_GUARDED_BY(mu_);
  std::vector<RejectionSource> rejection_sources_ ABSL_GUARDED_BY(mu_);
};

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      decisions_(&prometheus::BuildCounter()
                      .Name("traffik_decisions_total")
                      .Help("Decisions made, by tenant, throttle (configured uid, or "
                            "\"inline\") and result (allowed or throttled).")
                      .Register(*registry_)),
      errors_(
          &prometheus::BuildCounter()
               .Name("traffik_errors_total")
               .Help("Decision RPCs answered with an error, by gRPC status code name.")
               .Register(*registry_)),
      backend_errors_(
          &prometheus::BuildCounter()
               .Name("traffik_backend_errors_total")
               .Help("Decisions whose backend failed (unreachable, timed out), by "
                     "tenant, backend and the tenant's on_backend_error policy "
                     "(allow: the hit was allowed; deny: the call failed).")
               .Register(*registry_)),
      admin_requests_(&prometheus::BuildCounter()
                           .Name("traffik_admin_requests_total")
                           .Help("traffik.v1.AdminService calls, by method (rpc) and "
                                 "answer code (gRPC status code name).")
                           .Register(*registry_)),
      envoy_decisions_(
          &prometheus::BuildCounter()
               .Name("traffik_envoy_decisions_total")
               .Help("Envoy RLS descriptor decisions, by configured domain, matched rule "
                     "(its config path) and result (ok, over_limit, shadow_over_limit, "
                     "unlimited, no_match).")
               .Register(*registry_)),
      caller_requests_(&prometheus::BuildCounter()
                            .Name("traffik_caller_requests_total")
                            .Help("Calls authenticated as a configured caller (auth: "
                                  "required), by caller name, whatever their answer.")
                            .Register(*registry_)),
      runtime_(std::make_shared<RuntimeCollector>(&latency_)) {
  auto& auth_failures =
      prometheus::BuildCounter()
          .Name("traffik_auth_failures_total")
          .Help(
              "Calls refused by auth (auth: required), by reason: missing_credential, "
              "unknown_credential (UNAUTHENTICATED), tenant_not_granted, not_admin "
              "(PERMISSION_DENIED).")
          .Register(*registry_);
  for (int i = 0; i < kAuthFailureCount; ++i) {
    auth_failures_[i] =
        &auth_failures.Add({{"reason", AuthFailureName(static_cast<AuthFailure>(i))}});
  }
  auto& reloads = prometheus::BuildCounter()
                      .Name("traffik_config_reloads_total")
                      .Help(
                          "Configuration reloads (SIGHUP or a change of the file), by "
                          "result: success, or error (the running configuration kept "
                          "serving).")
                      .Register(*registry_);
  reloads_success_ = &reloads.Add({{"result", "success"}});
  reloads_error_ = &reloads.Add({{"result", "error"}});
  auto& tls_reloads =
      prometheus::BuildCounter()
          .Name("traffik_tls_certificate_reloads_total")
          .Help(
              "Changes of the gRPC port's TLS certificate/key files seen, by result: "
              "success (the new pair is served), or error (it is broken; the previous "
              "pair keeps serving).")
          .Register(*registry_);
  tls_reloads_success_ = &tls_reloads.Add({{"result", "success"}});
  tls_reloads_error_ = &tls_reloads.Add({{"result", "error"}});
  last_reload_success_ =
      &prometheus::BuildGauge()
           .Name("traffik_config_last_reload_success_timestamp_seconds")
           .Help(
               "When the configuration last loaded successfully (at startup or on a "
               "reload), in seconds since the Unix epoch.")
           .Register(*registry_)
           .Add({});
  config_info_ = &prometheus::BuildGauge()
                      .Name("traffik_config_info")
                      .Help(
                          "Always 1; config_hash is the SHA-256 of the configuration "
                          "file serving now.")
                      .Register(*registry_);
  for (int code = 1; code < static_cast<int>(error_counters_.size()); ++code) {
    const std::string name = absl::AsciiStrToUpper(
        absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
    error_counters_[code] = &errors_->Add({{"code", name}});
  }
}

DecisionCounters Metrics::ForThrottle(const std::string& tenant,
                                      const std::string& throttle) {
  DecisionCounters c;
  c.allowed = &decisions_->Add(
      {{"tenant", tenant}, {"throttle", throttle}, {"result", "allowed"}});
  c.throttled = &decisions_->Add(
      {{"tenant", tenant}, {"throttle", throttle}, {"result", "throttled"}});
  return c;
}

EnvoyDecisionCounters Metrics::ForEnvoyRule(const std::string& domain,
                                            const std::string& rule) {
  auto add = [&](const char* result) {
    return &envoy_decisions_->Add(
        {{"domain", domain}, {"rule", rule}, {"result", result}});
  };
  EnvoyDecisionCounters c;
  c.ok = add("ok");
  c.over_limit = add("over_limit");
  c.shadow_over_limit = add("shadow_over_limit");
  c.unlimited = add("unlimited");
  c.no_match = add("no_match");
  return c;
}

prometheus::Counter* Metrics::ForBackendErrors(const std::string& tenant,
                                               const std::string& backend,
                                               const std::string& policy) {
  return &backend_errors_->Add(
      {{"tenant", tenant}, {"backend", backend}, {"policy", policy}});
}

const char* AuthFailureName(AuthFailure failure) {
  switch (failure) {
    case AuthFailure::kMissingCredential:
      return "missing_credential";
    case AuthFailure::kUnknownCredential:
      return "unknown_credential";
    case AuthFailure::kTenantNotGranted:
      return "tenant_not_granted";
    case AuthFailure::kNotAdmin:
      return "not_admin";
  }
  return "unknown_credential";
}

prometheus::Counter* Metrics::ForCaller(const std::string& caller) {
  return &caller_requests_->Add({{"caller", caller}});
}

void Metrics::CountError(absl::StatusCode code) {
  const int i = static_cast<int>(code);
  if (i > 0 && i < static_cast<int>(error_counters_.size()))
    error_counters_[i]->Increment();
}

void Metrics::CountAdminRequest(const std::string& rpc, absl::StatusCode code) {
  admin_requests_
      ->Add(
          {{"rpc", rpc}, {"code", absl::AsciiStrToUpper(absl::StatusCodeToString(code))}})
      .Increment();
}

void Metrics::AddBucketSource(std::string backend, std::function<uint64_t()> buckets,
                              std::function<uint64_t()> evictions) {
  runtime_->AddBucketSource(std::move(backend), std::move(buckets), std::move(evictions));
}

void Metrics::AddRejectionSource(std::string backend, std::string tenant,
                                 std::function<uint64_t()> rejections) {
  runtime_->AddRejectionSource(std::move(backend), std::move(tenant),
                               std::move(rejections));
}

void Metrics::CountConfigReload(bool success) {
  (success ? reloads_success_ : reloads_error_)->Increment();
}

void Metrics::CountTlsCertificateReload(bool success) {
  (success ? tls_reloads_success_ : tls_reloads_error_)->Increment();
}

void Metrics::SetConfigReloadSuccessTime(double unix_seconds) {
  last_reload_success_->Set(unix_seconds);
}

void Metrics::SetConfigHash(const std::string& sha256_hex) {
  absl::MutexLock lock(&config_info_mu_);
  prometheus::Gauge* next = &config_info_->Add({{"config_hash", sha256_hex}});
  if (config_info_series_ != nullptr && config_info_series_ != next) {
    config_info_->Remove(config_info_series_);
  }
  next->Set(1);
  config_info_series_ = next;
}

std::string Metrics::RenderText() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : runtime_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace traffik
