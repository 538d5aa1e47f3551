#include "backend/redis/redis_options.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "base/host_port.h"

namespace traffik {
namespace {

// Error messages never echo the URL as a whole: only pieces that cannot hold
// a password (the scheme, a host, a port, the path) are quoted.
constexpr size_t kMaxQuotedBytes = 80;
constexpr char kPrefix[] = "bad Redis URL: ";

// Quotes a URL piece for an error message: C-escaped and truncated.
std::string Quote(absl::string_view s) {
  if (s.size() > kMaxQuotedBytes) {
    return absl::StrCat("'", absl::CHexEscape(s.substr(0, kMaxQuotedBytes)), "...'");
  }
  return absl::StrCat("'", absl::CHexEscape(s), "'");
}

template <typename... Args>
absl::Status Bad(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(kPrefix, args...));
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes; nullopt on a malformed escape. '+' stays '+'.
std::optional<std::string> PercentDecode(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = HexValue(s[i + 1]);
    int lo = HexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// Parses one `host[:port]` or `[ipv6][:port]` (base/host_port.h splits it;
// the Redis rules for each part are checked here).
absl::StatusOr<RedisEndpoint> ParseEndpoint(absl::string_view text) {
  RedisEndpoint endpoint;
  if (text.empty()) return Bad("empty host");
  const HostPort parts = SplitHostPort(text, /*port_required=*/false);
  switch (parts.problem) {
    case HostPortProblem::kNone:
    case HostPortProblem::kNoPort:
      break;
    case HostPortProblem::kEmptyHost:
      return Bad(text.front() == '[' ? "empty host '[]'" : "empty host");
    case HostPortProblem::kUnterminatedBracket:
      return Bad("unterminated '[' in host ", Quote(text));
    case HostPortProblem::kBadBracketedHost:
      return Bad("bad host ", Quote(text));
    case HostPortProblem::kTextAfterBracket:
      return Bad("unexpected ", Quote(parts.bad_text), " after ",
                 Quote(text.substr(0, text.size() - parts.bad_text.size())));
    case HostPortProblem::kUnbracketedIpv6:
      return Bad("IPv6 addresses must be in brackets, e.g. 'redis://[::1]:6379', got ",
                 Quote(text));
    case HostPortProblem::kEmptyPort:
      return Bad("empty port after ':'");
    case HostPortProblem::kBadPort:
      return Bad("bad port ", Quote(parts.bad_text), " (expected 1-65535)");
  }
  if (text.front() == '[') {
    bool has_colon = false;
    for (char c : parts.host) {
      has_colon = has_colon || c == ':';
      if (HexValue(c) < 0 && c != ':' && c != '.') {
        return Bad("bad IPv6 address ", Quote(parts.host));
      }
    }
    if (!has_colon) return Bad("bad IPv6 address ", Quote(parts.host));
  } else {
    for (char c : parts.host) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' &&
          c != '_') {
        return Bad("bad host ", Quote(parts.host));
      }
    }
  }
  endpoint.host = parts.host;
  if (parts.has_port) {
    if (parts.port < 1) {
      return Bad("bad port ", Quote(text.substr(text.rfind(':') + 1)),
                 " (expected 1-65535)");
    }
    endpoint.port = static_cast<int>(parts.port);
  }
  return endpoint;
}

// Appends `s` length-prefixed, so concatenated fields cannot be confused.
void AppendField(std::string& out, absl::string_view name, absl::string_view s) {
  absl::StrAppend(&out, name, "=", s.size(), ":", s, ";");
}

}  // namespace

std::string RedisOptions::Name() const {
  std::vector<std::string> hosts;
  hosts.reserve(endpoints.size());
  for (const RedisEndpoint& e : endpoints) {
    hosts.push_back(JoinHostPort(e.host, static_cast<uint32_t>(e.port)));
  }
  const char* scheme = tls ? "rediss" : "redis";
  if (cluster) {
    return absl::StrCat(scheme, "+cluster://", absl::StrJoin(hosts, ","));
  }
  return absl::StrCat(scheme, "://", absl::StrJoin(hosts, ","), "/", db);
}

std::string RedisOptions::TlsName() const {
  if (!tls_options.server_name.empty()) return tls_options.server_name;
  return endpoints.empty() ? std::string() : endpoints.front().host;
}

std::string RedisOptions::IdentityKey() const {
  std::string key;
  absl::StrAppend(&key, "cluster=", cluster ? 1 : 0, ";endpoints=", endpoints.size(),
                  ";");
  for (const RedisEndpoint& e : endpoints) {
    AppendField(key, "host", e.host);
    absl::StrAppend(&key, "port=", e.port, ";");
  }
  AppendField(key, "username", username);
  AppendField(key, "password", password);
  absl::StrAppend(&key, "db=", db, ";timeout_ms=", timeout_ms,
                  ";connect_timeout_ms=", connect_timeout_ms, ";pool_size=", pool_size,
                  ";");
  absl::StrAppend(&key, "tls=", tls ? 1 : 0, ";");
  if (tls) {
    AppendField(key, "ca_file", tls_options.ca_file);
    AppendField(key, "cert_file", tls_options.cert_file);
    AppendField(key, "key_file", tls_options.key_file);
    AppendField(key, "server_name", tls_options.server_name);
    absl::StrAppend(
        &key, "insecure_skip_verify=", tls_options.insecure_skip_verify ? 1 : 0, ";");
  }
  return key;
}

absl::StatusOr<RedisOptions> ParseRedisUrl(absl::string_view url) {
  for (unsigned char c : url) {
    if (c <= 0x20 || c == 0x7f) {
      return Bad("contains whitespace or control characters");
    }
  }
  size_t sep = url.find("://");
  if (sep == absl::string_view::npos) {
    return Bad("expected 'redis://...' or 'redis+cluster://...'");
  }
  std::string scheme = absl::AsciiStrToLower(url.substr(0, sep));
  RedisOptions options;
  if (scheme == "redis" || scheme == "rediss") {
    options.cluster = false;
    options.tls = scheme == "rediss";
  } else if (scheme == "redis+cluster" || scheme == "rediss+cluster") {
    options.cluster = true;
    options.tls = scheme == "rediss+cluster";
  } else {
    return Bad("unsupported scheme ", Quote(url.substr(0, sep)),
               " (expected redis://, redis+cluster://, rediss:// or "
               "rediss+cluster://)");
  }
  absl::string_view rest = url.substr(sep + 3);

  // Credentials end at the last '@': the host, port and path never hold one,
  // so a password with an unencoded '@', '/', '?' or '#' still parses.
  size_t at = rest.rfind('@');
  if (at != absl::string_view::npos) {
    absl::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (!userinfo.empty()) {
      size_t colon = userinfo.find(':');
      if (colon == absl::string_view::npos) {
        // "x@host": some clients read x as a user, others as a password.
        return Bad(
            "credentials must be written '[user]:password@' (a lone 'x@' is "
            "ambiguous)");
      }
      std::optional<std::string> user = PercentDecode(userinfo.substr(0, colon));
      if (!user) return Bad("bad percent-encoding in the username");
      std::optional<std::string> password = PercentDecode(userinfo.substr(colon + 1));
      if (!password) return Bad("bad percent-encoding in the password");
      if (password->empty() && !user->empty()) {
        return Bad("a username needs a password ('user:password@')");
      }
      options.username = std::move(*user);
      options.password = std::move(*password);
    }
  }

  if (rest.find('?') != absl::string_view::npos) {
    return Bad(
        "query strings ('?...') are not supported; use the tenant's redis: "
        "settings");
  }
  if (rest.find('#') != absl::string_view::npos) {
    return Bad("fragments ('#...') are not supported");
  }

  size_t slash = rest.find('/');
  absl::string_view hosts = rest.substr(0, slash);
  absl::string_view path =
      slash == absl::string_view::npos ? absl::string_view() : rest.substr(slash);

  if (hosts.empty()) return Bad("empty host");
  std::vector<absl::string_view> parts = absl::StrSplit(hosts, ',');
  if (parts.size() > 1 && !options.cluster) {
    return Bad("several hosts need redis+cluster:// (redis:// takes one host)");
  }
  for (absl::string_view part : parts) {
    absl::StatusOr<RedisEndpoint> endpoint = ParseEndpoint(part);
    if (!endpoint.ok()) return endpoint.status();
    options.endpoints.push_back(*std::move(endpoint));
  }

  // Path: "", "/" or "/<db>".
  absl::string_view db_text = path.empty() ? path : path.substr(1);
  if (!db_text.empty()) {
    bool digits_only = db_text.size() <= 10;
    for (char c : db_text) digits_only = digits_only && IsDigit(c);
    int64_t db = 0;
    if (!digits_only || !absl::SimpleAtoi(db_text, &db) ||
        db > std::numeric_limits<int32_t>::max()) {
      return Bad("bad database ", Quote(path),
                 " (expected '/<n>' with n a non-negative integer below 2^31)");
    }
    if (options.cluster && db != 0) {
      return Bad(options.tls ? "rediss+cluster://" : "redis+cluster://",
                 " has no databases (path ", Quote(path), "; only '/0' or none)");
    }
    options.db = static_cast<int>(db);
  }
  return options;
}

}  // namespace traffik
