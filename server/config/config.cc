#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/file.h"
#include "base/quote.h"
#include "base/utf8.h"
#include "bucket/token_bucket.h"
#include "config/callers_config.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace traffik {
namespace {

constexpr size_t kMaxTenantNameBytes = 256;
constexpr uint64_t kMaxIdentifierBytesLimit = 1 << 20;  // 1 MiB
constexpr uint64_t kMaxBatchSizeLimit = 100'000;
// Refuse absurdly large config files instead of reading them into memory.
constexpr size_t kMaxConfigFileBytes = 16 << 20;  // 16 MiB

// Accepted ranges of the duration settings (milliseconds). Each is what a
// careful operator could mean; anything beyond is a typo or an attack on the
// process (a sweep every 292 million years spins, a grace of 2^63 ms wraps).
constexpr int64_t kSecondMs = 1000;
constexpr int64_t kMinuteMs = 60 * kSecondMs;
constexpr int64_t kHourMs = 60 * kMinuteMs;
constexpr int64_t kDayMs = 24 * kHourMs;
constexpr int64_t kMaxShutdownGraceMs = 5 * kMinuteMs;  // shutdown_grace: 1ms..5m
constexpr int64_t kMaxDrainDelayMs = 5 * kMinuteMs;     // drain_delay: 0..5m
constexpr int64_t kMinSweepIntervalMs = 100;            // sweep_interval: 0 or 100ms..1h
constexpr int64_t kMaxSweepIntervalMs = kHourMs;
constexpr int64_t kMaxPeriodMs = 366 * kDayMs;  // throttle period: 1ms..366d

constexpr std::string_view kTopLevel = "top level";

// Debian's abseil is built with its own absl::string_view (not std's).
absl::string_view Absl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

std::string Quote(std::string_view s) { return QuoteYamlValue(s); }
std::string Describe(const YAML::Node& node) { return DescribeYamlNode(node); }
std::optional<unsigned char> FindControl(std::string_view s) {
  return FindControlCharacter(s);
}

// Where a (throttle / tenant) entry was defined, for cross-entry errors.
struct Located {
  std::string path;
  YAML::Mark mark;
};

class Parser : public YamlReader {
 public:
  Parser(std::string_view source, const BackendRegistry& registry)
      : YamlReader(source), registry_(registry) {}

  absl::StatusOr<Config> Parse(const YAML::Node& root);

 private:
  absl::StatusOr<BackendErrorPolicy> GetBackendErrorPolicy(const YAML::Node& node,
                                                           std::string_view path) const;

  absl::Status ParseMemory(const YAML::Node& node, MemoryConfig& memory);
  absl::Status ParseTenantMemory(const YAML::Node& node, std::string_view path,
                                 TenantMemoryConfig& memory, YAML::Mark& bytes_mark,
                                 YAML::Mark& buckets_mark) const;
  absl::Status CheckMemoryShares(const Config& config,
                                 const YAML::Mark& tenants_mark) const;
  absl::Status ParseThrottles(const YAML::Node& node, Config& config);
  absl::Status ParseTenants(const YAML::Node& node, Config& config);
  absl::Status CheckCapacities(const Config& config) const;
  // `envoy:`; rule files are loaded by LoadEnvoyRules once the tenants are
  // known.
  absl::Status ParseEnvoy(const YAML::Node& node, EnvoyConfig& envoy);
  absl::Status CheckEnvoy(const Config& config) const;
  absl::Status LoadEnvoyRules(EnvoyConfig& envoy) const;

  // Where each `envoy` setting is written (for errors found later).
  std::vector<YAML::Mark> envoy_dir_marks_;  // parallel to config_dirs
  YAML::Mark envoy_tenant_mark_ = YAML::Mark::null_mark();
  std::vector<std::pair<std::string, YAML::Mark>> envoy_tenant_marks_;  // domain, mark

  const BackendRegistry& registry_;
  std::vector<Located> throttle_locs_;  // parallel to Config::throttles
  // Where the memory budget and the tenants' own shares are written (null
  // marks when they are not), for CheckMemoryShares.
  YAML::Mark memory_bytes_mark_ = YAML::Mark::null_mark();
  YAML::Mark memory_buckets_mark_ = YAML::Mark::null_mark();
  std::vector<std::pair<YAML::Mark, YAML::Mark>> tenant_memory_marks_;  // bytes, buckets
};

absl::Status Parser::ParseMemory(const YAML::Node& node, MemoryConfig& memory) {
  return ForEachEntry(node, "memory", {"max_bytes", "max_buckets", "sweep_interval"},
                      [&](const std::string& key, const YAML::Node&,
                          const YAML::Node& value) -> absl::Status {
                        std::string path = absl::StrCat("memory.", key);
                        if (key == "max_bytes") {
                          absl::StatusOr<uint64_t> v = GetByteSize(value, path);
                          if (!v.ok()) return v.status();
                          memory.max_bytes = *v;
                          memory_bytes_mark_ = value.Mark();
                        } else if (key == "max_buckets") {
                          absl::StatusOr<uint64_t> v = GetUint(
                              value, path, 1, std::numeric_limits<uint64_t>::max());
                          if (!v.ok()) return v.status();
                          memory.max_buckets = *v;
                          memory_buckets_mark_ = value.Mark();
                        } else {
                          absl::StatusOr<int64_t> v =
                              GetDuration(value, path, kMinSweepIntervalMs,
                                          kMaxSweepIntervalMs, /*zero_allowed=*/true);
                          if (!v.ok()) return v.status();
                          memory.sweep_interval_ms = *v;
                        }
                        return absl::OkStatus();
                      });
}

absl::Status Parser::ParseTenantMemory(const YAML::Node& node, std::string_view path,
                                       TenantMemoryConfig& memory, YAML::Mark& bytes_mark,
                                       YAML::Mark& buckets_mark) const {
  return ForEachEntry(node, path, {"max_bytes", "max_buckets"},
                      [&](const std::string& key, const YAML::Node&,
                          const YAML::Node& value) -> absl::Status {
                        std::string field = absl::StrCat(Absl(path), ".", key);
                        if (key == "max_bytes") {
                          absl::StatusOr<uint64_t> v = GetByteSize(value, field);
                          if (!v.ok()) return v.status();
                          memory.max_bytes = *v;
                          bytes_mark = value.Mark();
                        } else {
                          absl::StatusOr<uint64_t> v = GetUint(
                              value, field, 1, std::numeric_limits<uint64_t>::max());
                          if (!v.ok()) return v.status();
                          memory.max_buckets = *v;
                          buckets_mark = value.Mark();
                        }
                        return absl::OkStatus();
                      });
}

// The memory tenants' own shares must fit the budget, and the equal part left
// for each tenant without its own must be at least 1 (bytes and buckets).
absl::Status Parser::CheckMemoryShares(const Config& config,
                                       const YAML::Mark& tenants_mark) const {
  struct Field {
    const char* key;
    const char* unit;
    uint64_t budget;
    const YAML::Mark* budget_mark;
    std::optional<uint64_t> TenantMemoryConfig::*own;
    bool bytes;
  };
  const Field fields[] = {
      {"max_bytes", "bytes", config.memory.max_bytes, &memory_bytes_mark_,
       &TenantMemoryConfig::max_bytes, true},
      {"max_buckets", "buckets", config.memory.max_buckets, &memory_buckets_mark_,
       &TenantMemoryConfig::max_buckets, false},
  };
  for (const Field& f : fields) {
    absl::uint128 own_total = 0;
    uint64_t without_own = 0;
    for (size_t i = 0; i < config.tenants.size(); ++i) {
      const TenantConfig& t = config.tenants[i];
      if (t.backend != kMemoryBackend) continue;
      const std::optional<uint64_t>& own = t.memory.*f.own;
      if (!own.has_value()) {
        ++without_own;
        continue;
      }
      own_total += *own;
      if (own_total > f.budget) {
        const YAML::Mark& mark = i < tenant_memory_marks_.size()
                                     ? (f.bytes ? tenant_memory_marks_[i].first
                                                : tenant_memory_marks_[i].second)
                                     : tenants_mark;
        return Error(mark, absl::StrCat("tenants[", i, "].memory.", f.key),
                     absl::StrCat("the memory tenants' own shares add up to ",
                                  absl::Uint128Low64(own_total) == own_total
                                      ? absl::StrCat(absl::Uint128Low64(own_total))
                                      : std::string("more than 2^64"),
                                  " ", f.unit, " by this one, more than memory.", f.key,
                                  " (", f.budget, " ", f.unit, ")"));
      }
    }
    if (without_own > 0 &&
        (f.budget - absl::Uint128Low64(own_total)) / without_own == 0) {
      return Error(
          f.budget_mark->is_null() ? tenants_mark : *f.budget_mark,
          absl::StrCat("memory.", f.key),
          absl::StrCat(f.budget - absl::Uint128Low64(own_total), " ", f.unit,
                       " left by the tenants' own shares cannot give each of the ",
                       without_own,
                       " memory tenants without one a share of at "
                       "least 1"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<BackendErrorPolicy> Parser::GetBackendErrorPolicy(
    const YAML::Node& node, std::string_view path) const {
  if (node.IsScalar()) {
    if (node.Scalar() == "deny") return BackendErrorPolicy::kDeny;
    if (node.Scalar() == "allow") return BackendErrorPolicy::kAllow;
  }
  return Error(node, path,
               absl::StrCat("expected 'allow' or 'deny', got ", Describe(node)));
}
absl::Status Parser::ParseThrottles(const YAML::Node& node, Config& config) {
  if (!node.IsSequence()) {
    return Error(node, "throttles",
                 absl::StrCat("expected a list, got ", Describe(node)));
  }
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    const std::string path = absl::StrCat("throttles[", i, "]");
    ThrottleConfig throttle;
    bool has_uid = false, has_limit = false, has_period = false;
    absl::Status s = ForEachEntry(
        item, path, {"uid", "limit", "period"},
        [&](const std::string& key, const YAML::Node&,
            const YAML::Node& value) -> absl::Status {
          std::string field = absl::StrCat(path, ".", key);
          if (key == "uid") {
            absl::StatusOr<std::string> uid = GetString(value, field);
            if (!uid.ok()) return uid.status();
            if (absl::Status v = ValidateThrottleUid(*uid); !v.ok()) {
              return Error(value, field, std::string(v.message()));
            }
            throttle.uid = *uid;
            has_uid = true;
          } else if (key == "limit") {
            absl::StatusOr<uint64_t> limit =
                GetUint(value, field, 1, std::numeric_limits<uint64_t>::max());
            if (!limit.ok()) return limit.status();
            throttle.limit = *limit;
            has_limit = true;
          } else {
            absl::StatusOr<int64_t> period = GetDuration(value, field, 1, kMaxPeriodMs);
            if (!period.ok()) return period.status();
            throttle.period_ms = static_cast<uint64_t>(*period);
            has_period = true;
          }
          return absl::OkStatus();
        });
    if (!s.ok()) return s;
    for (auto [present, key] : {std::pair{has_uid, "uid"}, std::pair{has_limit, "limit"},
                                std::pair{has_period, "period"}}) {
      if (!present) {
        return Error(item, path, absl::StrCat("missing required key '", key, "'"));
      }
    }
    for (size_t j = 0; j < config.throttles.size(); ++j) {
      if (config.throttles[j].uid == throttle.uid) {
        const YAML::Mark& first = throttle_locs_[j].mark;
        return Error(
            item, path,
            absl::StrFormat("duplicate throttle uid %s (first defined at "
                            "%s, line %d)",
                            Quote(throttle.uid), throttle_locs_[j].path, first.line + 1));
      }
    }
    config.throttles.push_back(std::move(throttle));
    throttle_locs_.push_back({path, item.Mark()});
  }
  return absl::OkStatus();
}

absl::Status Parser::ParseTenants(const YAML::Node& node, Config& config) {
  if (!node.IsSequence()) {
    return Error(node, "tenants", absl::StrCat("expected a list, got ", Describe(node)));
  }
  if (node.size() == 0) {
    return Error(node, "tenants",
                 "must list at least one tenant (omit the key to get the implicit "
                 "'default' tenant)");
  }
  std::vector<Located> locs;
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    const std::string path = absl::StrCat("tenants[", i, "]");
    TenantConfig tenant;
    std::optional<YAML::Node> name_node;
    std::optional<YAML::Node> prefix_node;
    std::optional<YAML::Mark> memory_key_mark;
    std::pair<YAML::Mark, YAML::Mark> memory_marks{YAML::Mark::null_mark(),
                                                   YAML::Mark::null_mark()};
    // A settings map (`redis:`) belongs to its backend's factory: kept raw.
    std::optional<std::string> settings_key;
    std::vector<std::string> allowed = {"name",
                                        "backend",
                                        "prefix",
                                        "quota_multiplier",
                                        "allow_inline_specs",
                                        "on_backend_error"};
    for (std::string& key : registry_.SettingsKeys()) allowed.push_back(std::move(key));
    allowed.push_back("memory");
    absl::Status s = ForEachEntry(
        item, path, allowed,
        [&](const std::string& key, const YAML::Node& key_node,
            const YAML::Node& value) -> absl::Status {
          std::string field = absl::StrCat(path, ".", key);
          if (key == "name") {
            absl::StatusOr<std::string> name = GetString(value, field);
            if (!name.ok()) return name.status();
            if (name->empty()) return Error(value, field, "must not be empty");
            if (absl::Status v = ValidateTenantName(*name); !v.ok()) {
              return Error(value, field, std::string(v.message()));
            }
            tenant.name = *name;
            name_node = value;
          } else if (key == "backend") {
            absl::StatusOr<std::string> backend = GetString(value, field);
            if (!backend.ok()) return backend.status();
            if (registry_.Find(*backend) == nullptr) {
              return Error(value, field,
                           absl::StrCat("unknown backend ",
                                        Quote(MaskUrlPassword(*backend)), " (supported: ",
                                        absl::StrJoin(registry_.Forms(), ", "), ")"));
            }
            tenant.backend = *backend;
            tenant.backend_spec.url_node = value;
          } else if (key == "prefix") {
            absl::StatusOr<std::string> prefix = GetString(value, field);
            if (!prefix.ok()) return prefix.status();
            tenant.prefix = *prefix;
            prefix_node = value;
          } else if (key == "quota_multiplier") {
            absl::StatusOr<double> m = GetPositiveDouble(value, field);
            if (!m.ok()) return m.status();
            tenant.quota_multiplier = *m;
          } else if (key == "allow_inline_specs") {
            absl::StatusOr<bool> b = GetBool(value, field);
            if (!b.ok()) return b.status();
            tenant.allow_inline_specs = *b;
          } else if (key == "on_backend_error") {
            absl::StatusOr<BackendErrorPolicy> policy =
                GetBackendErrorPolicy(value, field);
            if (!policy.ok()) return policy.status();
            tenant.on_backend_error = *policy;
          } else if (key == "memory") {
            memory_key_mark = key_node.Mark();
            return ParseTenantMemory(value, field, tenant.memory, memory_marks.first,
                                     memory_marks.second);
          } else {
            settings_key = key;
            tenant.backend_spec.has_settings = true;
            tenant.backend_spec.settings = value;
            tenant.backend_spec.settings_path = field;
            tenant.backend_spec.settings_key_mark = key_node.Mark();
          }
          return absl::OkStatus();
        });
    if (!s.ok()) return s;
    if (!name_node) return Error(item, path, "missing required key 'name'");

    // The backend's factory checks the URL and its settings map, once both
    // are known, whatever their order in the file.
    tenant.backend_spec.url = tenant.backend;
    tenant.backend_spec.url_path = absl::StrCat(path, ".backend");
    const BackendFactory* factory = registry_.Find(tenant.backend);
    if (factory == nullptr) {
      // Only the implicit "memory" can get here: no in-process backend.
      return Error(*name_node, tenant.backend_spec.url_path,
                   absl::StrCat("unknown backend ", Quote(tenant.backend)));
    }
    if (settings_key && *settings_key != factory->SettingsKey()) {
      const BackendFactory* owner = registry_.FindBySettingsKey(*settings_key);
      return Error(
          tenant.backend_spec.settings_key_mark, tenant.backend_spec.settings_path,
          absl::StrCat("only for a ", owner ? owner->Kind() : *settings_key, " backend"));
    }
    if (absl::StatusOr<std::unique_ptr<BackendSettings>> parsed =
            factory->Parse(tenant.backend_spec, *this);
        !parsed.ok()) {
      return parsed.status();
    }
    if (memory_key_mark && tenant.backend != kMemoryBackend) {
      return Error(*memory_key_mark, absl::StrCat(path, ".memory"),
                   "only for the memory backend");
    }

    // The prefix defaults to the name; either way it must be usable in a key.
    std::string prefix_path = absl::StrCat(path, ".prefix");
    const YAML::Node& prefix_at = prefix_node ? *prefix_node : *name_node;
    std::string_view origin = prefix_node ? "" : " (defaulted from the name)";
    if (!prefix_node) tenant.prefix = tenant.name;
    if (tenant.prefix.empty()) return Error(prefix_at, prefix_path, "must not be empty");
    if (auto c = FindControl(tenant.prefix)) {
      return Error(prefix_at, prefix_path,
                   absl::StrFormat("prefix %s%s contains control character 0x%02x",
                                   Quote(tenant.prefix), origin, *c));
    }
    if (tenant.prefix.find_first_of("{}") != std::string::npos) {
      return Error(prefix_at, prefix_path,
                   absl::StrCat("prefix ", Quote(tenant.prefix), Absl(origin),
                                " must not contain '{' or '}'"));
    }

    for (size_t j = 0; j < config.tenants.size(); ++j) {
      const TenantConfig& other = config.tenants[j];
      if (other.name == tenant.name) {
        return Error(
            *name_node, absl::StrCat(path, ".name"),
            absl::StrFormat("duplicate tenant name %s (first defined at %s, "
                            "line %d)",
                            Quote(tenant.name), locs[j].path, locs[j].mark.line + 1));
      }
      if (other.prefix == tenant.prefix) {
        return Error(prefix_at, prefix_path,
                     absl::StrFormat("duplicate prefix %s%s (also used by tenant %s at "
                                     "%s)",
                                     Quote(tenant.prefix), origin, Quote(other.name),
                                     locs[j].path));
      }
    }
    config.tenants.push_back(std::move(tenant));
    locs.push_back({path, item.Mark()});
    tenant_memory_marks_.push_back(memory_marks);
  }
  return absl::OkStatus();
}

// Every tenant's rate for every throttle must be one the bucket arithmetic
// accepts (IsValidRate: the capacity rule lives in bucket/).
absl::Status Parser::CheckCapacities(const Config& config) const {
  for (size_t i = 0; i < config.throttles.size(); ++i) {
    const ThrottleConfig& t = config.throttles[i];
    for (const TenantConfig& tenant : config.tenants) {
      const bool ok = IsValidRate(
          Rate{ScaledCapacity(t.limit, tenant.quota_multiplier), t.period_ms});
      if (!ok) {
        return Error(throttle_locs_[i].mark, throttle_locs_[i].path,
                     absl::StrCat("limit * period too large for tenant ",
                                  Quote(tenant.name), " (capacity*period_ms must be <= ",
                                  kMaxScaledCapacityText, ")"));
      }
    }
  }
  return absl::OkStatus();
}

// --- tls: (TlsConfig) ---

// A file named by `path` in the config must open for reading now.
absl::Status CheckReadableFile(const YamlReader& reader, const YAML::Node& node,
                               std::string_view path, const std::string& file) {
  if (file.empty()) return reader.Error(node, path, "must not be empty");
  const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return reader.Error(
        node, path,
        absl::StrCat("cannot read ", Quote(file), ": ",
                     err == ENOENT ? "no such file" : std::strerror(err)));
  }
  struct stat st;
  const bool is_dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
  close(fd);
  if (is_dir)
    return reader.Error(node, path, absl::StrCat(Quote(file), " is a directory"));
  return absl::OkStatus();
}

absl::StatusOr<TlsConfig> ParseTls(const YamlReader& reader, const YAML::Node& node) {
  TlsConfig tls;
  std::optional<YAML::Node> cert_node, key_node, ca_node, require_node;
  absl::Status s = reader.ForEachEntry(
      node, "tls", {"cert_file", "key_file", "client_ca_file", "require_client_cert"},
      [&](const std::string& key, const YAML::Node&,
          const YAML::Node& value) -> absl::Status {
        const std::string path = absl::StrCat("tls.", key);
        if (key == "require_client_cert") {
          absl::StatusOr<bool> b = reader.GetBool(value, path);
          if (!b.ok()) return b.status();
          tls.require_client_cert = *b;
          require_node = value;
          return absl::OkStatus();
        }
        absl::StatusOr<std::string> file = reader.GetString(value, path);
        if (!file.ok()) return file.status();
        if (absl::Status r = CheckReadableFile(reader, value, path, *file); !r.ok())
          return r;
        if (key == "cert_file") {
          tls.cert_file = *file;
          cert_node = value;
        } else if (key == "key_file") {
          tls.key_file = *file;
          key_node = value;
        } else {
          tls.client_ca_file = *file;
          ca_node = value;
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  if (!cert_node && !key_node) {
    return reader.Error(node, "tls", "cert_file and key_file are required");
  }
  if (!cert_node)
    return reader.Error(*key_node, "tls.cert_file", "required with key_file");
  if (!key_node)
    return reader.Error(*cert_node, "tls.key_file", "required with cert_file");
  if (tls.require_client_cert && !ca_node) {
    return reader.Error(
        *require_node, "tls.require_client_cert",
        "needs tls.client_ca_file (the CA that signs client certificates)");
  }
  return tls;
}

// --- end tls: ---

absl::StatusOr<Config> Parser::Parse(const YAML::Node& root) {
  if (root.IsNull()) return DefaultConfig();  // empty document: all defaults
  Config config;
  bool has_tenants = false;
  std::optional<YAML::Node> default_tenant_node;
  std::optional<YAML::Node> tenants_key;
  std::optional<YAML::Node> auth_node, callers_node;  // issue 10
  absl::Status s = ForEachEntry(
      root, kTopLevel,
      {"listen", "metrics_listen", "throttles", "tenants", "default_tenant",
       "max_identifier_bytes", "max_batch_size", "shutdown_grace", "drain_delay",
       "memory", "admin_api", "watch_config", "tls", "auth", "callers", "envoy"},
      [&](const std::string& key, const YAML::Node& key_node,
          const YAML::Node& value) -> absl::Status {
        if (key == "listen" || key == "metrics_listen") {
          absl::StatusOr<std::string> addr =
              GetAddress(value, key, /*allow_empty=*/key == "metrics_listen");
          if (!addr.ok()) return addr.status();
          (key == "listen" ? config.listen : config.metrics_listen) = *addr;
        } else if (key == "throttles") {
          return ParseThrottles(value, config);
        } else if (key == "tenants") {
          has_tenants = true;
          tenants_key = key_node;
          return ParseTenants(value, config);
        } else if (key == "default_tenant") {
          absl::StatusOr<std::string> name = GetString(value, key);
          if (!name.ok()) return name.status();
          config.default_tenant = *name;
          default_tenant_node = value;
        } else if (key == "max_identifier_bytes") {
          absl::StatusOr<uint64_t> v = GetUint(value, key, 1, kMaxIdentifierBytesLimit);
          if (!v.ok()) return v.status();
          config.max_identifier_bytes = *v;
        } else if (key == "max_batch_size") {
          absl::StatusOr<uint64_t> v = GetUint(value, key, 1, kMaxBatchSizeLimit);
          if (!v.ok()) return v.status();
          config.max_batch_size = *v;
        } else if (key == "shutdown_grace") {
          absl::StatusOr<int64_t> v = GetDuration(value, key, 1, kMaxShutdownGraceMs);
          if (!v.ok()) return v.status();
          config.shutdown_grace_ms = *v;
        } else if (key == "drain_delay") {
          absl::StatusOr<int64_t> v = GetDuration(value, key, 0, kMaxDrainDelayMs);
          if (!v.ok()) return v.status();
          config.drain_delay_ms = *v;
        } else if (key == "memory") {
          return ParseMemory(value, config.memory);
        } else if (key == "admin_api") {
          absl::StatusOr<bool> b = GetBool(value, key);
          if (!b.ok()) return b.status();
          config.admin_api = *b;
        } else if (key == "watch_config") {
          absl::StatusOr<bool> b = GetBool(value, key);
          if (!b.ok()) return b.status();
          config.watch_config = *b;
        } else if (key == "tls") {
          absl::StatusOr<TlsConfig> tls = ParseTls(*this, value);
          if (!tls.ok()) return tls.status();
          config.tls = *std::move(tls);
        } else if (key == "auth") {  // issue 10: config/callers_config.h
          absl::StatusOr<AuthMode> mode = ParseAuthMode(*this, value);
          if (!mode.ok()) return mode.status();
          config.auth = *mode;
          auth_node = value;
        } else if (key == "callers") {  // parsed once the tenants are known
          callers_node = value;
        } else if (key == "envoy") {
          return ParseEnvoy(value, config.envoy);
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;

  if (!has_tenants) config.tenants = DefaultConfig().tenants;

  bool found = false;
  std::vector<std::string> names;
  for (const TenantConfig& t : config.tenants) {
    found = found || t.name == config.default_tenant;
    names.push_back(t.name);
  }
  if (!found) {
    std::string problem =
        absl::StrCat("unknown tenant ", Quote(config.default_tenant),
                     " (defined tenants: ", absl::StrJoin(names, ", "), ")");
    if (default_tenant_node)
      return Error(*default_tenant_node, "default_tenant", problem);
    // Not written: the implicit "default" must then be one of `tenants`.
    return Error(*tenants_key, "default_tenant",
                 absl::StrCat(problem, "; define it or set default_tenant"));
  }

  // Callers (issue 10): their tenants must exist, so after the tenants.
  if (callers_node) {
    if (absl::Status c = ParseCallers(*this, *callers_node, &config); !c.ok()) return c;
  }
  if (auth_node) {
    if (absl::Status a = CheckAuthHasCallers(*this, *auth_node, config); !a.ok()) {
      return a;
    }
  }

  if (absl::Status c = CheckCapacities(config); !c.ok()) return c;
  if (absl::Status e = CheckEnvoy(config); !e.ok()) return e;
  if (absl::Status m = CheckMemoryShares(
          config, tenants_key ? tenants_key->Mark() : YAML::Mark::null_mark());
      !m.ok()) {
    return m;
  }
  // Last: reading the rule files is the one costly step.
  if (absl::Status r = LoadEnvoyRules(config.envoy); !r.ok()) return r;
  return config;
}

absl::Status Parser::ParseEnvoy(const YAML::Node& node, EnvoyConfig& envoy) {
  envoy.enabled = true;
  if (node.IsNull()) return absl::OkStatus();  // `envoy:` alone: the defaults
  // Relative directories are relative to the config file's own directory.
  const std::string& file = source();
  const size_t slash = file.rfind('/');
  const std::string base = slash == std::string::npos ? "" : file.substr(0, slash + 1);
  return ForEachEntry(
      node, "envoy", {"config_dirs", "tenant_for_domain", "response_headers"},
      [&](const std::string& key, const YAML::Node& /*key_node*/,
          const YAML::Node& value) -> absl::Status {
        const std::string path = absl::StrCat("envoy.", key);
        if (key == "config_dirs") {
          if (!value.IsSequence()) {
            return Error(
                value, path,
                absl::StrCat("expected a list of directories, got ", Describe(value)));
          }
          size_t i = 0;
          for (const YAML::Node& item : value) {
            const std::string p = absl::StrCat(path, "[", i++, "]");
            absl::StatusOr<std::string> dir = GetString(item, p);
            if (!dir.ok()) return dir.status();
            if (dir->empty()) return Error(item, p, "must not be empty");
            if (auto c = FindControl(*dir)) {
              return Error(item, p,
                           absl::StrFormat("contains control character 0x%02x", *c));
            }
            envoy.config_dirs.push_back((*dir)[0] == '/' ? *dir : base + *dir);
            envoy_dir_marks_.push_back(item.Mark());
          }
        } else if (key == "tenant_for_domain") {
          if (value.IsScalar()) {
            absl::StatusOr<std::string> name = GetString(value, path);
            if (!name.ok()) return name.status();
            if (name->empty()) return Error(value, path, "must not be empty");
            envoy.tenant_for_all = *name;
            envoy_tenant_mark_ = value.Mark();
            return absl::OkStatus();
          }
          if (!value.IsMap()) {
            return Error(value, path,
                         absl::StrCat("expected a tenant name or a map of domain to "
                                      "tenant, got ",
                                      Describe(value)));
          }
          for (auto it = value.begin(); it != value.end(); ++it) {
            const YAML::Node k = it->first;
            const YAML::Node v = it->second;
            if (!k.IsScalar()) {
              return Error(k, path,
                           absl::StrCat("domains must be strings, got ", Describe(k)));
            }
            const std::string& domain = k.Scalar();
            const std::string p = absl::StrCat(path, ".", domain);
            set_current_key_mark(k.Mark());
            absl::StatusOr<std::string> name = GetString(v, p);
            if (!name.ok()) return name.status();
            if (name->empty()) return Error(v, p, "must not be empty");
            if (!envoy.tenant_for_domain.emplace(domain, *name).second) {
              return Error(k, path, absl::StrCat("duplicate domain ", Quote(domain)));
            }
            envoy_tenant_marks_.emplace_back(domain, v.Mark());
          }
        } else if (key == "response_headers") {
          absl::StatusOr<bool> b = GetBool(value, path);
          if (!b.ok()) return b.status();
          envoy.response_headers = *b;
        }
        return absl::OkStatus();
      });
}

absl::Status Parser::CheckEnvoy(const Config& config) const {
  std::vector<std::string> names;
  for (const TenantConfig& t : config.tenants) names.push_back(t.name);
  auto check = [&](const std::string& tenant, const YAML::Mark& mark,
                   const std::string& path) -> absl::Status {
    for (const std::string& n : names) {
      if (n == tenant) return absl::OkStatus();
    }
    return Error(mark, path,
                 absl::StrCat("unknown tenant ", Quote(tenant),
                              " (defined tenants: ", absl::StrJoin(names, ", "), ")"));
  };
  const EnvoyConfig& envoy = config.envoy;
  if (!envoy.tenant_for_all.empty()) {
    if (absl::Status s =
            check(envoy.tenant_for_all, envoy_tenant_mark_, "envoy.tenant_for_domain");
        !s.ok()) {
      return s;
    }
  }
  for (const auto& [domain, mark] : envoy_tenant_marks_) {
    if (absl::Status s = check(envoy.tenant_for_domain.at(domain), mark,
                               absl::StrCat("envoy.tenant_for_domain.", domain));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::LoadEnvoyRules(EnvoyConfig& envoy) const {
  if (envoy.config_dirs.empty()) return absl::OkStatus();
  // A missing directory is the config's error (named with its field); a bad
  // rule file is reported by the rules loader, naming that file.
  for (size_t i = 0; i < envoy.config_dirs.size(); ++i) {
    struct stat st;
    const std::string& dir = envoy.config_dirs[i];
    const std::string path = absl::StrCat("envoy.config_dirs[", i, "]");
    if (stat(dir.c_str(), &st) != 0) {
      return Error(envoy_dir_marks_[i], path,
                   absl::StrCat("directory ", Quote(dir), ": ", std::strerror(errno)));
    }
    if (!S_ISDIR(st.st_mode)) {
      return Error(envoy_dir_marks_[i], path,
                   absl::StrCat(Quote(dir), " is not a directory"));
    }
  }
  absl::StatusOr<std::shared_ptr<const envoy::RuleSet>> rules =
      envoy::RuleSet::LoadDirs(envoy.config_dirs);
  if (!rules.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(rules.status().message(), " (from ",
                                                   source(), ": envoy.config_dirs)"));
  }
  envoy.rules = *std::move(rules);
  return absl::OkStatus();
}

}  // namespace

MemoryShareConfig MemoryShareOf(const Config& config, const TenantConfig& tenant) {
  uint64_t own_bytes = 0, own_buckets = 0, without_bytes = 0, without_buckets = 0;
  for (const TenantConfig& t : config.tenants) {
    if (t.backend != kMemoryBackend) continue;
    if (t.memory.max_bytes) {
      own_bytes += *t.memory.max_bytes;
    } else {
      ++without_bytes;
    }
    if (t.memory.max_buckets) {
      own_buckets += *t.memory.max_buckets;
    } else {
      ++without_buckets;
    }
  }
  // Saturating: a config that ParseConfig accepted never needs it.
  auto part = [](uint64_t budget, uint64_t own, uint64_t n) -> uint64_t {
    return n == 0 || own >= budget ? 0 : (budget - own) / n;
  };
  MemoryShareConfig share;
  share.max_bytes = tenant.memory.max_bytes.value_or(
      part(config.memory.max_bytes, own_bytes, without_bytes));
  share.max_buckets = tenant.memory.max_buckets.value_or(
      part(config.memory.max_buckets, own_buckets, without_buckets));
  return share;
}

Config DefaultConfig() {
  Config config;
  TenantConfig tenant;
  tenant.name = "default";
  tenant.backend = kMemoryBackend;
  tenant.backend_spec.url = kMemoryBackend;
  tenant.backend_spec.url_path = "tenants[0].backend";
  tenant.prefix = "default";
  tenant.quota_multiplier = 1.0;
  tenant.allow_inline_specs = true;
  config.tenants.push_back(std::move(tenant));
  return config;
}

namespace {

// Counts a text's YAML documents, up to 2, and remembers where the second
// starts. Used instead of YAML::LoadAll: yaml-cpp 0.7's LoadAll never ends
// on some malformed input (a lone ",": found by the config fuzzer), and only
// "one document or more than one" matters here.
class DocumentCounter final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    ++started_;
    if (started_ == 2) second_ = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { Content(); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    Content();
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    Content();
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Content();
  }
  void OnMapEnd() override {}

  int started() const { return started_; }
  // True when a second document holds more than a null (an empty trailing
  // "---" is not a second document, as for YAML::LoadAll).
  bool second_has_content() const { return second_has_content_; }
  const YAML::Mark& second() const { return second_; }

 private:
  void Content() {
    if (started_ == 2) second_has_content_ = true;
  }
  int started_ = 0;
  bool second_has_content_ = false;
  YAML::Mark second_;
};

absl::StatusOr<Config> ParseConfigText(std::string_view yaml_text,
                                       std::string_view source,
                                       const BackendRegistry& registry) {
  const std::string text(yaml_text);
  YAML::Node doc;
  DocumentCounter counter;
  try {
    std::istringstream stream(text);
    YAML::Parser yaml_parser(stream);
    // Two documents at most: enough to tell one from several, and a parser
    // that does not advance cannot loop.
    for (int i = 0; i < 2; ++i) {
      if (!yaml_parser.HandleNextDocument(counter)) break;
    }
    if (!counter.second_has_content()) doc = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    int col = e.mark.is_null() ? 1 : e.mark.column + 1;
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:%d:%d: not valid YAML: %s", source, line, col, e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:1:1: not valid YAML: %s", source, e.what()));
  }
  Parser parser(source, registry);
  if (counter.second_has_content()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s:%d:%d: %s: expected a single YAML document", source,
        counter.second().line + 1, counter.second().column + 1, kTopLevel));
  }
  if (!doc.IsDefined() || doc.IsNull()) return DefaultConfig();
  // The walk only reads already-built nodes, but yaml-cpp's accessors are
  // declared to throw; keep any such surprise inside this function.
  try {
    return parser.Parse(doc);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s:1:1: %s: internal error reading YAML: %s", source, kTopLevel, e.what()));
  }
}

}  // namespace

absl::StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source) {
  return ParseConfig(yaml_text, source, BackendRegistry::Global());
}

absl::StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source,
                                   const BackendRegistry& registry) {
  absl::StatusOr<Config> config = ParseConfigText(yaml_text, source, registry);
  if (config.ok()) config->source = std::string(source);
  return config;
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileBounded(path, kMaxConfigFileBytes);
  if (!text.ok()) {
    return absl::Status(
        text.status().code(),
        absl::StrCat("config file ", Quote(path), ": ", text.status().message()));
  }
  return text;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadConfigFile(path);
  if (!text.ok()) return text.status();
  return ParseConfig(*text, path);
}
const std::string& EnvoyConfig::TenantFor(std::string_view domain,
                                          const std::string& default_tenant) const {
  auto it = tenant_for_domain.find(Absl(domain));
  if (it != tenant_for_domain.end()) return it->second;
  return tenant_for_all.empty() ? default_tenant : tenant_for_all;
}

absl::Status ValidateTenantName(std::string_view name) {
  const absl::string_view text = Absl(name);
  if (name.empty()) return absl::InvalidArgumentError("tenant name must not be empty");
  if (name.size() > kMaxTenantNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tenant name ", QuoteForMessage(text),
                                                   " is longer than ",
                                                   kMaxTenantNameBytes, " bytes"));
  }
  if (auto c = FindControl(name)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tenant name %s contains control character 0x%02x", QuoteForMessage(text), *c));
  }
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant name ", QuoteForMessage(text), " is not valid UTF-8"));
  }
  return absl::OkStatus();
}

}  // namespace traffik
