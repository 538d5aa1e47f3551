#include "engine/key.h"

#include <openssl/sha.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/quote.h"
#include "base/utf8.h"

namespace traffik {
namespace {

void AppendKeyBase(absl::string_view prefix, absl::string_view uid,
                   absl::string_view identifier, size_t extra, std::string* out) {
  out->clear();
  out->reserve(prefix.size() + uid.size() + identifier.size() + 4 + extra);
  out->append(prefix.data(), prefix.size());
  out->push_back(':');
  out->append(uid.data(), uid.size());
  out->append(":{");
  out->append(identifier.data(), identifier.size());
  out->push_back('}');
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Debian's abseil is built with its own absl::string_view (not std's).
absl::string_view Absl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// The first control character (< 0x20 or 0x7f) in `s`, if any.
std::optional<unsigned char> FindControl(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return c;
  }
  return std::nullopt;
}

// Parses the decimal number that ends `s` at `end` (exclusive), moving `*end`
// to its first digit. No leading zeros (so each value has one spelling).
bool ParseTrailingNumber(absl::string_view s, size_t* end, uint64_t* value) {
  size_t begin = *end;
  while (begin > 0 && IsDigit(s[begin - 1])) --begin;
  const absl::string_view digits = s.substr(begin, *end - begin);
  if (digits.empty() || (digits.size() > 1 && digits[0] == '0')) return false;
  if (!absl::SimpleAtoi(digits, value)) return false;
  *end = begin;
  return true;
}

}  // namespace

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

void BuildBucketKey(absl::string_view prefix, absl::string_view uid,
                    absl::string_view identifier, std::string* out) {
  AppendKeyBase(prefix, uid, identifier, 0, out);
}

void BuildInlineBucketKey(absl::string_view prefix, absl::string_view uid,
                          absl::string_view identifier, uint64_t limit,
                          uint64_t period_ms, std::string* out) {
  AppendKeyBase(prefix, uid, identifier, 42, out);
  char buffer[absl::numbers_internal::kFastToBufferSize];
  out->push_back('#');
  out->append(buffer, absl::numbers_internal::FastIntToBuffer(limit, buffer) - buffer);
  out->push_back('/');
  out->append(buffer,
              absl::numbers_internal::FastIntToBuffer(period_ms, buffer) - buffer);
}

namespace {

void AppendPercentEncoded(absl::string_view text, std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7f || c == '%' || c == '/' || c == ':' || c == '{' ||
        c == '}' || c == '#') {
      out->push_back('%');
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    } else {
      out->push_back(static_cast<char>(c));
    }
  }
}

}  // namespace

std::string EnvoyBucketUid(absl::string_view domain, absl::string_view rule_path) {
  std::string uid =
      "\x1f"
      "envoy/";
  AppendPercentEncoded(domain, &uid);
  uid.push_back('/');
  AppendPercentEncoded(rule_path, &uid);
  if (uid.size() <= kMaxThrottleUidBytes) return uid;
  const std::string framed =
      absl::StrCat(domain.size(), ":", domain, rule_path.size(), ":", rule_path);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(framed.data()), framed.size(), digest);
  uid =
      "\x1f"
      "envoy#";
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : digest) {
    uid.push_back(kHex[c >> 4]);
    uid.push_back(kHex[c & 15]);
  }
  return uid;
}

std::optional<BucketKeyParts> ParseBucketKey(absl::string_view key) {
  BucketKeyParts parts;
  const size_t brace = key.find('{');
  if (brace == absl::string_view::npos || brace == 0 || key[brace - 1] != ':') {
    return std::nullopt;
  }
  const size_t uid_end = brace - 1;  // the ':' before '{'
  if (uid_end == 0) return std::nullopt;
  const size_t uid_colon = key.rfind(':', uid_end - 1);
  if (uid_colon == absl::string_view::npos) return std::nullopt;
  parts.prefix = key.substr(0, uid_colon);
  parts.uid = key.substr(uid_colon + 1, uid_end - uid_colon - 1);
  if (parts.prefix.empty() || parts.uid.empty()) return std::nullopt;

  size_t end = key.size();  // one past the closing '}'
  if (!key.empty() && IsDigit(key.back())) {
    parts.is_inline = true;
    if (!ParseTrailingNumber(key, &end, &parts.period_ms)) return std::nullopt;
    if (end == 0 || key[end - 1] != '/') return std::nullopt;
    --end;
    if (!ParseTrailingNumber(key, &end, &parts.limit)) return std::nullopt;
    if (end == 0 || key[end - 1] != '#') return std::nullopt;
    --end;
  }
  if (end < brace + 2 || key[end - 1] != '}') return std::nullopt;
  parts.identifier = key.substr(brace + 1, end - brace - 2);
  return parts;
}

std::string BucketKeyPrefix(absl::string_view prefix, absl::string_view uid,
                            absl::string_view identifier) {
  std::string out(prefix);
  out.push_back(':');
  if (uid.empty()) return out;
  out.append(uid.data(), uid.size());
  out.append(":{");
  if (identifier.empty()) return out;
  out.append(identifier.data(), identifier.size());
  out.push_back('}');
  return out;
}

bool BucketKeyMatches(absl::string_view key, absl::string_view prefix,
                      absl::string_view uid, absl::string_view identifier) {
  const std::optional<BucketKeyParts> parts = ParseBucketKey(key);
  return parts.has_value() && parts->prefix == prefix &&
         (uid.empty() || parts->uid == uid) &&
         (identifier.empty() || parts->identifier == identifier);
}

}  // namespace traffik
