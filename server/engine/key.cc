#include "engine/key.h"

#include "absl/strings/numbers.h"

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
