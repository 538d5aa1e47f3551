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
#include "backend/redis/redis_options.h"
#include "base/quote.h"
#include "base/utf8.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace traffik {
namespace {

constexpr size_t kMaxThrottleUidBytes = 256;
constexpr size_t kMaxTenantNameBytes = 256;
constexpr uint64_t kMaxIdentifierBytesLimit = 1 << 20;  // 1 MiB
constexpr uint64_t kMaxBatchSizeLimit = 100'000;
// A bucket's capacity * period_ms must be exactly representable as a double
// (the token arithmetic is done in doubles).
constexpr uint64_t kMaxCapacityTimesPeriod = uint64_t{1} << 53;
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

// 3600000 -> "1h", 90000 -> "90s", 250 -> "250ms": the largest whole unit.
std::string FormatDurationMs(int64_t ms) {
  if (ms != 0 && ms % kDayMs == 0) return absl::StrCat(ms / kDayMs, "d");
  if (ms != 0 && ms % kHourMs == 0) return absl::StrCat(ms / kHourMs, "h");
  if (ms != 0 && ms % kMinuteMs == 0) return absl::StrCat(ms / kMinuteMs, "m");
  if (ms != 0 && ms % kSecondMs == 0) return absl::StrCat(ms / kSecondMs, "s");
  return absl::StrCat(ms, "ms");
}
// Longest user-supplied string quoted verbatim in an error message.
constexpr size_t kMaxQuotedBytes = 80;

constexpr std::string_view kTopLevel = "top level";

// Debian's abseil is built with its own absl::string_view (not std's).
absl::string_view Absl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// Quotes a user-supplied string for an error message: C-escaped (so control
// characters stay visible) and truncated if very long.
std::string Quote(std::string_view s) {
  if (s.size() > kMaxQuotedBytes) {
    return absl::StrCat("'", absl::CHexEscape(Absl(s.substr(0, kMaxQuotedBytes))),
                        "...'");
  }
  return absl::StrCat("'", absl::CHexEscape(Absl(s)), "'");
}

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

// Returns the first control character in `s`, if any.
std::optional<unsigned char> FindControl(std::string_view s) {
  for (unsigned char c : s) {
    if (IsControl(c)) return c;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Durations.

struct DurationUnit {
  std::string_view name;
  int64_t ms;
};

constexpr DurationUnit kDurationUnits[] = {
    {"ms", 1}, {"s", 1'000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000},
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// ---------------------------------------------------------------------------
// Backends.

constexpr uint64_t kMaxRedisPoolSize = 64;

// True for "<scheme>://..." where the scheme starts with "redis" (redis,
// redis+cluster, and the unsupported rediss / redis+sentinel, which
// ParseRedisUrl rejects by name).
bool LooksLikeRedisUrl(std::string_view s) {
  size_t sep = s.find("://");
  if (sep == std::string_view::npos) return false;
  return absl::StartsWithIgnoreCase(Absl(s.substr(0, sep)), "redis");
}

// Hides the password of "scheme://user:password@host..." (and the whole
// userinfo of "scheme://x@host", where x may be a password) for messages.
std::string MaskPassword(std::string_view s) {
  size_t sep = s.find("://");
  if (sep == std::string_view::npos) return std::string(s);
  size_t start = sep + 3;
  size_t at = s.rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(s);
  std::string_view userinfo = s.substr(start, at - start);
  size_t colon = userinfo.find(':');
  size_t hide_from = colon == std::string_view::npos ? start : start + colon + 1;
  return absl::StrCat(Absl(s.substr(0, hide_from)), "***", Absl(s.substr(at)));
}

// A tenant's `redis:` map, applied to the parsed backend URL afterwards.
struct RedisSettings {
  std::optional<int64_t> timeout_ms;
  std::optional<int64_t> connect_timeout_ms;
  std::optional<int> pool_size;
  std::optional<std::string> username;
  YAML::Mark username_mark;
  std::optional<std::string> password;  // read from `password_env`
};

// ---------------------------------------------------------------------------
// YAML walking. Every error carries "<source>:<line>:<col>: <path>: <problem>".

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

// Where a (throttle / tenant) entry was defined, for cross-entry errors.
struct Located {
  std::string path;
  YAML::Mark mark;
};

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  absl::StatusOr<Config> Parse(const YAML::Node& root);

 private:
  absl::Status Error(const YAML::Mark& mark, std::string_view path,
                     std::string_view problem) const {
    // yaml-cpp marks are 0-based; a null mark (-1) has no position.
    int line = mark.is_null() ? 1 : mark.line + 1;
    int col = mark.is_null() ? 1 : mark.column + 1;
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:%d:%d: %s: %s", source_, line, col, path, problem));
  }
  // A null value (`key:` or `key: ~`) is reported at its key: yaml-cpp marks an
  // omitted value at the start of the next token, which may be lines later.
  absl::Status Error(const YAML::Node& node, std::string_view path,
                     std::string_view problem) const {
    bool use_key = node.IsNull() || node.Mark().is_null();
    return Error(use_key ? current_key_mark_ : node.Mark(), path, problem);
  }

  // Iterates a map, rejecting non-string keys, duplicate keys and keys not in
  // `allowed`; calls `fn(key, key_node, value_node)` for each entry.
  template <typename Fn>
  absl::Status ForEachEntry(const YAML::Node& map, std::string_view path,
                            const std::vector<std::string>& allowed, Fn fn) const;

  absl::StatusOr<std::string> GetString(const YAML::Node& node,
                                        std::string_view path) const;
  absl::StatusOr<uint64_t> GetUint(const YAML::Node& node, std::string_view path,
                                   uint64_t min, uint64_t max) const;
  absl::StatusOr<bool> GetBool(const YAML::Node& node, std::string_view path) const;
  absl::StatusOr<double> GetPositiveDouble(const YAML::Node& node,
                                           std::string_view path) const;
  // A duration in [min_ms, max_ms], or exactly 0 when `zero_allowed` (0 =
  // off); the error names the accepted range.
  absl::StatusOr<int64_t> GetDuration(const YAML::Node& node, std::string_view path,
                                      int64_t min_ms, int64_t max_ms,
                                      bool zero_allowed = false) const;
  absl::StatusOr<std::string> GetAddress(const YAML::Node& node, std::string_view path,
                                         bool allow_empty) const;
  absl::StatusOr<uint64_t> GetByteSize(const YAML::Node& node,
                                       std::string_view path) const;

  absl::StatusOr<BackendErrorPolicy> GetBackendErrorPolicy(const YAML::Node& node,
                                                           std::string_view path) const;

  absl::Status ParseMemory(const YAML::Node& node, MemoryConfig& memory);
  absl::Status ParseTenantMemory(const YAML::Node& node, std::string_view path,
                                 TenantMemoryConfig& memory, YAML::Mark& bytes_mark,
                                 YAML::Mark& buckets_mark) const;
  absl::Status CheckMemoryShares(const Config& config,
                                 const YAML::Mark& tenants_mark) const;
  absl::Status ParseRedisSettings(const YAML::Node& node, std::string_view path,
                                  RedisSettings& settings) const;
  absl::Status ApplyRedisSettings(const RedisSettings& settings,
                                  std::string_view tenant_path,
                                  RedisOptions& options) const;
  absl::Status ParseThrottles(const YAML::Node& node, Config& config);
  absl::Status ParseTenants(const YAML::Node& node, Config& config);
  absl::Status CheckCapacities(const Config& config) const;

  std::string source_;
  std::vector<Located> throttle_locs_;  // parallel to Config::throttles
  // Where the memory budget and the tenants' own shares are written (null
  // marks when they are not), for CheckMemoryShares.
  YAML::Mark memory_bytes_mark_ = YAML::Mark::null_mark();
  YAML::Mark memory_buckets_mark_ = YAML::Mark::null_mark();
  std::vector<std::pair<YAML::Mark, YAML::Mark>> tenant_memory_marks_;  // bytes, buckets
  // Mark of the map key whose value is being read (see Error()).
  mutable YAML::Mark current_key_mark_;
};

template <typename Fn>
absl::Status Parser::ForEachEntry(const YAML::Node& map, std::string_view path,
                                  const std::vector<std::string>& allowed, Fn fn) const {
  if (!map.IsMap()) {
    return Error(map, path, absl::StrCat("expected a map, got ", Describe(map)));
  }
  std::vector<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    // Copies (Node is a handle): it->first lives in a temporary proxy, so a
    // reference to it dangles (ASan: stack-use-after-scope).
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar()) {
      return Error(key, path, absl::StrCat("keys must be strings, got ", Describe(key)));
    }
    const std::string& name = key.Scalar();
    bool known = false;
    for (const std::string& a : allowed) known = known || a == name;
    if (!known) {
      return Error(key, path,
                   absl::StrCat("unknown key ", Quote(name), " (expected one of: ",
                                absl::StrJoin(allowed, ", "), ")"));
    }
    for (const std::string& s : seen) {
      if (s == name) return Error(key, path, absl::StrCat("duplicate key ", Quote(name)));
    }
    seen.push_back(name);
    current_key_mark_ = key.Mark();
    if (absl::Status s = fn(name, key, value); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Parser::GetString(const YAML::Node& node,
                                              std::string_view path) const {
  if (!node.IsScalar()) {
    return Error(node, path, absl::StrCat("expected a string, got ", Describe(node)));
  }
  return node.Scalar();
}

absl::StatusOr<uint64_t> Parser::GetUint(const YAML::Node& node, std::string_view path,
                                         uint64_t min, uint64_t max) const {
  const char* kind = min >= 1 ? "a positive integer" : "a non-negative integer";
  if (!node.IsScalar()) {
    return Error(node, path, absl::StrCat("expected ", kind, ", got ", Describe(node)));
  }
  const std::string& text = node.Scalar();
  uint64_t value = 0;
  bool digits_only = !text.empty();
  for (char c : text) digits_only = digits_only && IsDigit(c);
  if (!digits_only) {
    return Error(node, path, absl::StrCat("expected ", kind, ", got ", Quote(text)));
  }
  if (!absl::SimpleAtoi(text, &value)) {
    return Error(node, path,
                 absl::StrCat("integer ", Quote(text), " is too large (max ", max, ")"));
  }
  if (value < min || value > max) {
    if (max == std::numeric_limits<uint64_t>::max()) {
      return Error(node, path, absl::StrCat("must be >= ", min, ", got ", value));
    }
    return Error(node, path,
                 absl::StrCat("must be between ", min, " and ", max, ", got ", value));
  }
  return value;
}

absl::StatusOr<bool> Parser::GetBool(const YAML::Node& node,
                                     std::string_view path) const {
  if (node.IsScalar()) {
    if (node.Scalar() == "true") return true;
    if (node.Scalar() == "false") return false;
  }
  return Error(node, path,
               absl::StrCat("expected a boolean (true or false), got ", Describe(node)));
}

absl::StatusOr<double> Parser::GetPositiveDouble(const YAML::Node& node,
                                                 std::string_view path) const {
  constexpr char kKind[] = "expected a positive finite number";
  if (!node.IsScalar()) {
    return Error(node, path, absl::StrCat(kKind, ", got ", Describe(node)));
  }
  const std::string& text = node.Scalar();
  // Only plain decimal notation: no hex, inf, nan or surrounding whitespace.
  bool plain = !text.empty();
  for (char c : text) {
    plain =
        plain && (IsDigit(c) || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-');
  }
  double value = 0;
  if (!plain || !absl::SimpleAtod(text, &value)) {
    return Error(node, path, absl::StrCat(kKind, ", got ", Quote(text)));
  }
  if (!std::isfinite(value) || !(value > 0)) {
    return Error(node, path, absl::StrCat(kKind, ", got ", Quote(text)));
  }
  return value;
}

absl::StatusOr<int64_t> Parser::GetDuration(const YAML::Node& node, std::string_view path,
                                            int64_t min_ms, int64_t max_ms,
                                            bool zero_allowed) const {
  if (!node.IsScalar()) {
    return Error(node, path,
                 absl::StrCat("expected a duration such as '30s', got ", Describe(node)));
  }
  absl::StatusOr<int64_t> ms = ParseDurationMs(node.Scalar());
  if (!ms.ok()) {
    return Error(
        node, path,
        absl::StrCat("bad duration ", Quote(node.Scalar()), ": ", ms.status().message()));
  }
  if (*ms == 0 && zero_allowed) return *ms;
  if (*ms < min_ms || *ms > max_ms) {
    return Error(
        node, path,
        absl::StrCat("duration ", Quote(node.Scalar()), " is out of range: must be ",
                     zero_allowed ? "0 (off) or " : "", FormatDurationMs(min_ms), "..",
                     FormatDurationMs(max_ms)));
  }
  return *ms;
}

absl::StatusOr<std::string> Parser::GetAddress(const YAML::Node& node,
                                               std::string_view path,
                                               bool allow_empty) const {
  absl::StatusOr<std::string> text = GetString(node, path);
  if (!text.ok()) return text.status();
  const std::string& addr = *text;
  if (addr.empty() && allow_empty) return addr;
  auto bad = [&](std::string_view why) {
    return Error(
        node, path,
        absl::StrCat("expected host:port, got ", Quote(addr), " (", Absl(why), ")"));
  };
  for (unsigned char c : addr) {
    if (IsControl(c) || c == ' ') return bad("contains whitespace or control characters");
  }
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return bad("no ':port'");
  std::string_view host = std::string_view(addr).substr(0, colon);
  std::string_view port = std::string_view(addr).substr(colon + 1);
  if (!host.empty() && host.front() == '[') {
    // Bracketed IPv6 literal, e.g. "[::1]".
    if (host.size() < 3 || host.back() != ']') return bad("bad [IPv6] host");
    if (host.substr(1, host.size() - 2).find_first_of("[]") != std::string_view::npos) {
      return bad("bad [IPv6] host");
    }
  } else {
    if (host.empty()) return bad("empty host");
    if (host.find_first_of(":[]") != std::string_view::npos) {
      return bad("IPv6 hosts must be in brackets, e.g. '[::1]:50051'");
    }
  }
  bool digits_only = !port.empty() && port.size() <= 5;
  for (char c : port) digits_only = digits_only && IsDigit(c);
  uint32_t port_number = 0;
  if (!digits_only || !absl::SimpleAtoi(Absl(port), &port_number) ||
      port_number > 65535) {
    return bad("port must be 0-65535");
  }
  return addr;
}

absl::StatusOr<uint64_t> Parser::GetByteSize(const YAML::Node& node,
                                             std::string_view path) const {
  constexpr char kKind[] = "expected a size in bytes such as '256MiB' or '1048576'";
  if (!node.IsScalar()) {
    return Error(node, path, absl::StrCat(kKind, ", got ", Describe(node)));
  }
  const std::string& text = node.Scalar();
  size_t digits = 0;
  while (digits < text.size() && IsDigit(text[digits])) ++digits;
  if (digits == 0) return Error(node, path, absl::StrCat(kKind, ", got ", Quote(text)));
  const std::string_view unit = std::string_view(text).substr(digits);
  uint64_t multiplier = 0;
  if (unit.empty()) {
    multiplier = 1;
  } else if (unit == "KiB") {
    multiplier = uint64_t{1} << 10;
  } else if (unit == "MiB") {
    multiplier = uint64_t{1} << 20;
  } else if (unit == "GiB") {
    multiplier = uint64_t{1} << 30;
  } else {
    return Error(node, path,
                 absl::StrCat("bad size ", Quote(text), ": unknown unit ", Quote(unit),
                              " (use no unit for bytes, or KiB, MiB, GiB)"));
  }
  uint64_t value = 0;
  if (!absl::SimpleAtoi(Absl(std::string_view(text).substr(0, digits)), &value) ||
      value > std::numeric_limits<uint64_t>::max() / multiplier) {
    return Error(node, path,
                 absl::StrCat("size ", Quote(text), " is too large (max ",
                              std::numeric_limits<uint64_t>::max(), " bytes)"));
  }
  if (value == 0) {
    return Error(node, path,
                 absl::StrCat("size ", Quote(text), " must be at least 1 byte"));
  }
  return value * multiplier;
}

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
      if (t.redis.has_value()) continue;
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

absl::Status Parser::ParseRedisSettings(const YAML::Node& node, std::string_view path,
                                        RedisSettings& settings) const {
  return ForEachEntry(
      node, path, {"timeout", "connect_timeout", "pool_size", "username", "password_env"},
      [&](const std::string& key, const YAML::Node&,
          const YAML::Node& value) -> absl::Status {
        std::string field = absl::StrCat(Absl(path), ".", key);
        if (key == "timeout" || key == "connect_timeout") {
          absl::StatusOr<int64_t> ms =
              GetDuration(value, field, kMinRedisTimeoutMs, kMaxRedisTimeoutMs);
          if (!ms.ok()) return ms.status();
          (key == "timeout" ? settings.timeout_ms : settings.connect_timeout_ms) = *ms;
        } else if (key == "pool_size") {
          absl::StatusOr<uint64_t> n = GetUint(value, field, 1, kMaxRedisPoolSize);
          if (!n.ok()) return n.status();
          settings.pool_size = static_cast<int>(*n);
        } else if (key == "username") {
          absl::StatusOr<std::string> user = GetString(value, field);
          if (!user.ok()) return user.status();
          if (auto c = FindControl(*user)) {
            return Error(
                value, field,
                absl::StrFormat("username contains control character 0x%02x", *c));
          }
          settings.username = *user;
          settings.username_mark = value.Mark();
        } else {
          absl::StatusOr<std::string> name = GetString(value, field);
          if (!name.ok()) return name.status();
          if (name->empty() ||
              name->find_first_of(std::string_view("=\0", 2)) != std::string::npos) {
            return Error(value, field,
                         absl::StrCat("expected an environment variable name, got ",
                                      Quote(*name)));
          }
          // Read once, at parse time: the password itself never appears in the
          // file, and a missing variable is a config error, not a runtime one.
          const char* password = std::getenv(name->c_str());
          if (password == nullptr) {
            return Error(
                value, field,
                absl::StrCat("environment variable ", Quote(*name), " is not set"));
          }
          if (*password == '\0') {
            return Error(
                value, field,
                absl::StrCat("environment variable ", Quote(*name), " is empty"));
          }
          settings.password = password;
        }
        return absl::OkStatus();
      });
}

absl::Status Parser::ApplyRedisSettings(const RedisSettings& settings,
                                        std::string_view tenant_path,
                                        RedisOptions& options) const {
  if (settings.timeout_ms) options.timeout_ms = *settings.timeout_ms;
  if (settings.connect_timeout_ms) {
    options.connect_timeout_ms = *settings.connect_timeout_ms;
  }
  if (settings.pool_size) options.pool_size = *settings.pool_size;
  if (settings.username) options.username = *settings.username;
  if (settings.password) options.password = *settings.password;
  if (settings.username && !options.username.empty() && options.password.empty()) {
    return Error(settings.username_mark,
                 absl::StrCat(Absl(tenant_path), ".redis.username"),
                 "a username needs a password (in the backend URL or via password_env)");
  }
  return absl::OkStatus();
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
    std::optional<YAML::Mark> redis_key_mark;
    std::optional<YAML::Mark> memory_key_mark;
    std::pair<YAML::Mark, YAML::Mark> memory_marks{YAML::Mark::null_mark(),
                                                   YAML::Mark::null_mark()};
    RedisSettings redis_settings;
    absl::Status s = ForEachEntry(
        item, path,
        {"name", "backend", "prefix", "quota_multiplier", "allow_inline_specs",
         "on_backend_error", "redis", "memory"},
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
            if (*backend == "memory") {
              tenant.redis.reset();
            } else if (LooksLikeRedisUrl(*backend)) {
              absl::StatusOr<RedisOptions> redis = ParseRedisUrl(Absl(*backend));
              if (!redis.ok()) {
                return Error(value, field, std::string(redis.status().message()));
              }
              tenant.redis = *std::move(redis);
            } else {
              return Error(value, field,
                           absl::StrCat("unknown backend ", Quote(MaskPassword(*backend)),
                                        " (supported: memory, redis://..., "
                                        "redis+cluster://...)"));
            }
            tenant.backend = *backend;
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
            redis_key_mark = key_node.Mark();
            return ParseRedisSettings(value, field, redis_settings);
          }
          return absl::OkStatus();
        });
    if (!s.ok()) return s;
    if (!name_node) return Error(item, path, "missing required key 'name'");

    // The `redis:` map refines the backend URL, so it is applied once both are
    // known, whatever their order in the file.
    if (redis_key_mark) {
      if (!tenant.redis) {
        return Error(*redis_key_mark, absl::StrCat(path, ".redis"),
                     "only for a Redis backend");
      }
      if (absl::Status a = ApplyRedisSettings(redis_settings, path, *tenant.redis);
          !a.ok()) {
        return a;
      }
    }
    if (memory_key_mark && tenant.redis) {
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

// Every tenant's capacity for every throttle, times the period, must stay
// within 2^53 so the bucket arithmetic is exact.
absl::Status Parser::CheckCapacities(const Config& config) const {
  for (size_t i = 0; i < config.throttles.size(); ++i) {
    const ThrottleConfig& t = config.throttles[i];
    for (const TenantConfig& tenant : config.tenants) {
      // long double holds any uint64 limit exactly, so a limit just above 2^53
      // is not rounded down into range (as it would be in double).
      long double capacity =
          std::max(1.0L, std::floor(static_cast<long double>(t.limit) *
                                    static_cast<long double>(tenant.quota_multiplier)));
      bool ok = capacity <= static_cast<long double>(kMaxCapacityTimesPeriod) &&
                static_cast<uint64_t>(capacity) <= kMaxCapacityTimesPeriod / t.period_ms;
      if (!ok) {
        return Error(
            throttle_locs_[i].mark, throttle_locs_[i].path,
            absl::StrCat("limit * period too large for tenant ", Quote(tenant.name),
                         " (capacity*period_ms must be <= 2^53)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> Parser::Parse(const YAML::Node& root) {
  if (root.IsNull()) return DefaultConfig();  // empty document: all defaults
  Config config;
  bool has_tenants = false;
  std::optional<YAML::Node> default_tenant_node;
  std::optional<YAML::Node> tenants_key;
  absl::Status s = ForEachEntry(
      root, kTopLevel,
      {"listen", "metrics_listen", "throttles", "tenants", "default_tenant",
       "max_identifier_bytes", "max_batch_size", "shutdown_grace", "drain_delay",
       "memory", "admin_api"},
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

  if (absl::Status c = CheckCapacities(config); !c.ok()) return c;
  if (absl::Status m = CheckMemoryShares(
          config, tenants_key ? tenants_key->Mark() : YAML::Mark::null_mark());
      !m.ok()) {
    return m;
  }
  return config;
}

absl::Status ReadError(const std::string& path, int err) {
  std::string what = absl::StrCat("config file ", Quote(path), ": ");
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(absl::StrCat(what, "no such file"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat(what, "permission denied"));
    case EISDIR:
      return absl::InvalidArgumentError(absl::StrCat(what, "is a directory"));
    default:
      return absl::InvalidArgumentError(absl::StrCat(what, std::strerror(err)));
  }
}

}  // namespace

MemoryShareConfig MemoryShareOf(const Config& config, const TenantConfig& tenant) {
  uint64_t own_bytes = 0, own_buckets = 0, without_bytes = 0, without_buckets = 0;
  for (const TenantConfig& t : config.tenants) {
    if (t.redis.has_value()) continue;
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
  tenant.backend = "memory";
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

}  // namespace

absl::StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source) {
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
  Parser parser(source);
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

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ReadError(path, errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return ReadError(path, err);
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return ReadError(path, EISDIR);
  }
  std::string text;
  char buf[64 * 1024];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return ReadError(path, err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxConfigFileBytes) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat(
          "config file ", Quote(path), ": larger than ", kMaxConfigFileBytes, " bytes"));
    }
  }
  close(fd);
  return ParseConfig(text, path);
}

absl::StatusOr<int64_t> ParseDurationMs(std::string_view text) {
  constexpr int kMaxFractionDigits = 18;
  const absl::uint128 kFractionScale = absl::uint128(1'000'000'000'000'000'000ULL);
  const absl::uint128 kMaxMs = absl::uint128(std::numeric_limits<int64_t>::max());

  if (text.empty()) return absl::InvalidArgumentError("empty duration");
  if (text.front() == '-') {
    return absl::InvalidArgumentError("negative durations are not allowed");
  }
  // total_ms + fraction / 10^18 is the exact value parsed so far.
  absl::uint128 total_ms = 0;
  absl::uint128 fraction = 0;
  size_t i = 0;
  while (i < text.size()) {
    // Number: digits, optionally '.' and more digits.
    size_t start = i;
    absl::uint128 whole = 0;
    while (i < text.size() && IsDigit(text[i])) {
      whole = whole * 10 + (text[i] - '0');
      if (whole > kMaxMs) return absl::InvalidArgumentError("duration overflows");
      ++i;
    }
    if (i == start) {
      if (absl::ascii_isspace(static_cast<unsigned char>(text[i]))) {
        return absl::InvalidArgumentError("whitespace is not allowed");
      }
      return absl::InvalidArgumentError(
          absl::StrCat("expected a number at ", Quote(text.substr(i))));
    }
    std::string_view fraction_digits;
    if (i < text.size() && text[i] == '.') {
      size_t frac_start = ++i;
      while (i < text.size() && IsDigit(text[i])) ++i;
      if (i == frac_start) {
        return absl::InvalidArgumentError("expected digits after '.'");
      }
      fraction_digits = text.substr(frac_start, i - frac_start);
      while (!fraction_digits.empty() && fraction_digits.back() == '0') {
        fraction_digits.remove_suffix(1);
      }
    }
    std::string_view number = text.substr(start, i - start);

    // Unit: everything up to the next number.
    size_t unit_start = i;
    while (i < text.size() && !IsDigit(text[i]) && text[i] != '.') ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    if (unit.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing unit after ", Quote(number), " (use ms, s, m, h or d)"));
    }
    for (char c : unit) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError("whitespace is not allowed");
      }
    }
    const DurationUnit* found = nullptr;
    for (const DurationUnit& u : kDurationUnits) {
      if (u.name == unit) found = &u;
    }
    if (found == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown unit ", Quote(unit), " (use ms, s, m, h or d)"));
    }

    total_ms += whole * found->ms;
    if (total_ms > kMaxMs) return absl::InvalidArgumentError("duration overflows");
    if (!fraction_digits.empty()) {
      if (fraction_digits.size() > kMaxFractionDigits) {
        return absl::InvalidArgumentError(
            absl::StrCat("not a whole number of milliseconds (too many fractional "
                         "digits in ",
                         Quote(number), ")"));
      }
      // fraction_digits / 10^k * unit_ms, scaled by 10^18.
      absl::uint128 digits = 0;
      for (char c : fraction_digits) digits = digits * 10 + (c - '0');
      absl::uint128 scale = 1;
      for (size_t k = fraction_digits.size(); k < kMaxFractionDigits; ++k) scale *= 10;
      fraction += digits * scale * found->ms;
      total_ms += fraction / kFractionScale;
      fraction %= kFractionScale;
      if (total_ms > kMaxMs) return absl::InvalidArgumentError("duration overflows");
    }
  }
  if (fraction != 0) {
    return absl::InvalidArgumentError("not a whole number of milliseconds");
  }
  return static_cast<int64_t>(total_ms);
}

absl::Status ValidateThrottleUid(std::string_view uid) {
  // Echoed quoted, escaped and truncated: the uid may come from a caller.
  const absl::string_view text = Absl(uid);
  if (uid.empty()) return absl::InvalidArgumentError("throttle uid must not be empty");
  if (uid.size() > kMaxThrottleUidBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("throttle uid ", QuoteForMessage(text), " is ", uid.size(),
                     " bytes long (max ", kMaxThrottleUidBytes, ")"));
  }
  if (auto c = FindControl(uid)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "throttle uid %s contains control character 0x%02x", QuoteForMessage(text), *c));
  }
  size_t bad = uid.find_first_of(":{}");
  if (bad != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "throttle uid ", QuoteForMessage(text), " contains '", Absl(uid.substr(bad, 1)),
        "' (':', '{' and '}' are reserved for bucket keys)"));
  }
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("throttle uid ", QuoteForMessage(text), " is not valid UTF-8"));
  }
  return absl::OkStatus();
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
