#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "backend/registry.h"
#include "engine/key.h"
#include "envoy/rules.h"
#include "yaml/yaml_reader.h"

namespace traffik {

// One configured throttle: `limit` tokens per `period_ms`.
struct ThrottleConfig {
  std::string uid;
  uint64_t limit = 0;      // tokens, >= 1
  uint64_t period_ms = 0;  // ms, >= 1
};

// What a tenant's decisions do when its backend fails (unreachable, timeout).
enum class BackendErrorPolicy {
  kDeny,   // the call fails with UNAVAILABLE naming the backend (default)
  kAllow,  // the hit is allowed (fail open) and counted in a metric
};

// A memory tenant's own share of the `memory:` budget (YAML key
// `tenants[].memory`); an unset field takes an equal part of what the tenants
// with their own share leave (see MemoryShareOf).
struct TenantMemoryConfig {
  std::optional<uint64_t> max_bytes;    // `max_bytes` (a byte size), >= 1
  std::optional<uint64_t> max_buckets;  // `max_buckets`, >= 1
};

// One tenant: whose backend and quota a request uses.
struct TenantConfig {
  std::string name;
  // "memory", or a backend URL as written in the file (it may hold a
  // password: never log it; the backend's settings Name() is safe).
  std::string backend = "memory";
  // The URL again with the tenant's raw settings map for its backend (e.g.
  // `redis:`) and where they are written: config checks them with the
  // backend's factory (backend/registry.h) but keeps them raw; the factory
  // parses them again when it builds or reuses the backend.
  BackendSpec backend_spec;
  std::string prefix;             // key prefix; defaults to `name`
  double quota_multiplier = 1.0;  // > 0; capacity = max(1, floor(limit * multiplier))
  bool allow_inline_specs = true;
  BackendErrorPolicy on_backend_error =
      BackendErrorPolicy::kDeny;  // `on_backend_error: allow|deny`
  TenantMemoryConfig memory;      // only for the memory backend
};

// Settings of the embedded in-memory backend (YAML key `memory:`). The
// budget is shared by the memory tenants (MemoryShareOf).
struct MemoryConfig {
  // `max_bytes`: bytes of stored buckets (keys + per-bucket overhead), >= 1;
  // an integer, or with a KiB, MiB or GiB suffix. The default fits the Helm
  // chart's 512Mi pod limit with room for the rest of the process.
  uint64_t max_bytes = uint64_t{256} << 20;
  uint64_t max_buckets = 1'000'000;  // `max_buckets`, >= 1
  int64_t sweep_interval_ms =
      10'000;  // `sweep_interval` (duration); how often full buckets are dropped
};

// ---- Callers and authorization (issue 10; parsed in config/callers_config.cc) ----

// `auth:` whether every gRPC call must carry a configured caller's credential.
enum class AuthMode {
  kOff,       // `off` (default): no checks; a presented credential is ignored
  kRequired,  // `required`: UNAUTHENTICATED / PERMISSION_DENIED (auth/)
};

// One entry of `callers:`: who may call, with which credential, for which
// tenants. Exactly one credential: an API key (held only as its SHA-256
// digest, whichever of api_key_sha256 / api_key_file / api_key_env gave it) or
// a verified client certificate's identity.
struct CallerConfig {
  std::string name;  // [a-zA-Z0-9_.-]{1,64}, unique (bounded: a metric label)
  // The 32 raw bytes of the SHA-256 of the key; empty for an mTLS caller.
  // Never logged or shown.
  std::string api_key_digest;
  // Subject CN or a URI SAN (e.g. spiffe://...) of the client certificate;
  // empty for an API-key caller.
  std::string mtls_identity;
  bool all_tenants = false;          // `tenants: "*"`
  std::vector<std::string> tenants;  // configured tenant names (unless all_tenants)
  bool admin = false;                // may call traffik.v1.AdminService
};

// The `envoy:` section: Envoy's rate-limit service
// (envoy.service.ratelimit.v3.RateLimitService) and the envoyproxy/ratelimit
// config files it decides with (envoy/rules.h). The files are loaded by
// ParseConfig / LoadConfigFile, so a bad one fails the config (and a reload).
struct EnvoyConfig {
  bool enabled = false;                  // the file has an `envoy:` section
  std::vector<std::string> config_dirs;  // as resolved (absolute or relative to cwd)
  std::string tenant_for_all;  // `tenant_for_domain: <name>`; "" = default_tenant
  absl::flat_hash_map<std::string, std::string> tenant_for_domain;  // map form
  bool response_headers = false;
  // never null after ParseConfig (empty set)
  std::shared_ptr<const envoy::RuleSet> rules = envoy::RuleSet::Empty();
  // The tenant a domain's buckets live on: the map's entry, else tenant_for_all,
  // else `default_tenant` of the Config.
  const std::string& TenantFor(std::string_view domain,
                               const std::string& default_tenant) const;
};

// The `backend:` of the in-process store, whose budget is `memory:`.
inline constexpr char kMemoryBackend[] = "memory";

// TLS on the gRPC port (YAML key `tls:`). Paths as written (relative ones
// are relative to traffikd's working directory); ParseConfig checks that each
// names a readable file, the server checks their contents at start. The
// certificate and key are re-read when they change (a rotation); a config
// reload does not change them (the port is not re-bound).
struct TlsConfig {
  std::string cert_file{};  // `cert_file`: PEM certificate chain, required
  std::string key_file{};   // `key_file`: PEM private key, required
  // `client_ca_file`: PEM CA bundle for client certificates (mutual TLS); ""
  // = none asked for. Set without require_client_cert: a client certificate
  // is verified when sent, and not required.
  std::string client_ca_file{};
  bool require_client_cert = false;  // `require_client_cert`: needs client_ca_file

  bool operator==(const TlsConfig&) const = default;
};

// An immutable, validated configuration snapshot. Built only by ParseConfig /
// LoadConfigFile / DefaultConfig, which guarantee every invariant below.
struct Config {
  std::string listen = "127.0.0.1:50051";         // gRPC address, host:port
  std::string metrics_listen = "127.0.0.1:9464";  // Prometheus /metrics; "" disables
  std::vector<ThrottleConfig> throttles;          // unique uids
  std::vector<TenantConfig> tenants;              // unique names, unique prefixes; >= 1
  std::string default_tenant = "default";         // names one of `tenants`
  uint64_t max_identifier_bytes = 4096;           // >= 1
  uint64_t max_batch_size = 1000;                 // >= 1
  int64_t shutdown_grace_ms = 10'000;             // `shutdown_grace` (duration)
  int64_t drain_delay_ms = 0;                     // `drain_delay` (duration, may be 0)
  MemoryConfig memory;
  // `admin_api`: serve traffik.v1.AdminService (bucket resets and peeks,
  // throttle listing) on the gRPC port. Off by default, so an open port never
  // exposes it by accident.
  bool admin_api = false;
  // `watch_config`: reload when the file changes (inotify on its directory);
  // SIGHUP reloads either way. Only meaningful with --config.
  bool watch_config = true;
  // `auth` and `callers` (issue 10): unique names, digests and identities;
  // every granted tenant exists; `required` needs at least one caller.
  AuthMode auth = AuthMode::kOff;
  std::vector<CallerConfig> callers;
  // `tls`: nullopt = plaintext (the default).
  std::optional<TlsConfig> tls;
  // `envoy:` (see EnvoyConfig).
  EnvoyConfig envoy;
  // Names the text in error messages (the file path); set by ParseConfig.
  std::string source = "(embedded default)";
};

// A memory tenant's share of `config.memory`, for bytes and buckets each: its
// own (`tenants[].memory`), else an equal part (rounded down) of what the
// memory tenants with their own leave. ParseConfig checks that the own shares
// fit and that every equal part is at least 1.
struct MemoryShareConfig {
  uint64_t max_bytes = 0;
  uint64_t max_buckets = 0;
};
MemoryShareConfig MemoryShareOf(const Config& config, const TenantConfig& tenant);

// The configuration used when traffikd runs without --config: the fields'
// defaults plus one tenant `default` on the memory backend, inline specs on.
Config DefaultConfig();

// Parses and validates YAML text. `source` names the text in error messages
// (normally the file path). Errors are kInvalidArgument with a message of the
// form "<source>:<line>:<col>: <field path>: <problem>", e.g.
// "traffik.yaml:7:13: throttles[1].period: bad duration '5x': unknown unit 'x'".
// Each tenant's backend is checked by its factory in `registry` (the
// process' BackendRegistry::Global() by default, where the app registers the
// built-in backends).
absl::StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source);
absl::StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source,
                                   const BackendRegistry& registry);

// Reads a configuration file whole (at most 16 MiB); errors as LoadConfigFile.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path);

// Reads and parses a file. A missing or unreadable file is kNotFound /
// kPermissionDenied (kInvalidArgument for other read errors), naming the path.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// ParseDurationMs: yaml/yaml_reader.h.

// ValidateThrottleUid: engine/key.h (next to the keys it protects).

// The tenant name rule, for configured names and the `tenant` of a request
// alike: 1..256 bytes of valid UTF-8 without control characters. Returns
// kInvalidArgument naming the problem (the name quoted, escaped, truncated).
absl::Status ValidateTenantName(std::string_view name);

}  // namespace traffik
