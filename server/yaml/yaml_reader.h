#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "yaml-cpp/yaml.h"

namespace traffik {

// Reading validated values out of a YAML tree, shared by the config parser
// and the backends' factories (which parse their own raw settings node, see
// backend/registry.h), so every configuration error has one form:
// "<source>:<line>:<col>: <field path>: <problem>", with a user value shown
// only quoted, escaped and truncated (QuoteYamlValue).
//
// Not thread-safe (it remembers the key being read); one reader per parse.
class YamlReader {
 public:
  explicit YamlReader(std::string_view source) : source_(source) {}

  const std::string& source() const { return source_; }

  absl::Status Error(const YAML::Mark& mark, std::string_view path,
                     std::string_view problem) const;
  // A null value (`key:` or `key: ~`) is reported at its key: yaml-cpp marks an
  // omitted value at the start of the next token, which may be lines later.
  absl::Status Error(const YAML::Node& node, std::string_view path,
                     std::string_view problem) const;

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
  // A listening address "host:port" (port 0..65535; IPv6 in brackets), or ""
  // when `allow_empty`.
  absl::StatusOr<std::string> GetAddress(const YAML::Node& node, std::string_view path,
                                         bool allow_empty) const;
  // A byte size: digits with an optional KiB, MiB or GiB suffix, >= 1.
  absl::StatusOr<uint64_t> GetByteSize(const YAML::Node& node,
                                       std::string_view path) const;

  // Remembers where the key whose value is read next is (for Error(node)).
  void set_current_key_mark(const YAML::Mark& mark) const { current_key_mark_ = mark; }

 private:
  std::string source_;
  // Mark of the map key whose value is being read (see Error()).
  mutable YAML::Mark current_key_mark_;
};

// Quotes a user-supplied string for a configuration error: C-escaped (so
// control characters stay visible) and truncated if very long.
std::string QuoteYamlValue(std::string_view s);

// "null", "a list", "a map" or the quoted scalar.
std::string DescribeYamlNode(const YAML::Node& node);

// Returns the first control character (< 0x20 or 0x7f) in `s`, if any.
std::optional<unsigned char> FindControlCharacter(std::string_view s);

// 3600000 -> "1h", 90000 -> "90s", 250 -> "250ms": the largest whole unit.
std::string FormatDurationMs(int64_t ms);

// Parses a duration such as "500ms", "30s", "5m", "1h", "2d" or combinations
// like "1h5m30.5s" (units ms, s, m, h, d; each number may have a fraction) into
// whole milliseconds. Errors (kInvalidArgument) name the problem: empty, no
// unit, unknown unit, not a whole number of ms, overflow.
absl::StatusOr<int64_t> ParseDurationMs(std::string_view text);

template <typename Fn>
absl::Status YamlReader::ForEachEntry(const YAML::Node& map, std::string_view path,
                                      const std::vector<std::string>& allowed,
                                      Fn fn) const {
  if (!map.IsMap()) {
    return Error(map, path, absl::StrCat("expected a map, got ", DescribeYamlNode(map)));
  }
  std::vector<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    // Copies (Node is a handle): it->first lives in a temporary proxy, so a
    // reference to it dangles (ASan: stack-use-after-scope).
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar()) {
      return Error(key, path,
                   absl::StrCat("keys must be strings, got ", DescribeYamlNode(key)));
    }
    const std::string& name = key.Scalar();
    bool known = false;
    for (const std::string& a : allowed) known = known || a == name;
    if (!known) {
      return Error(
          key, path,
          absl::StrCat("unknown key ", QuoteYamlValue(name),
                       " (expected one of: ", absl::StrJoin(allowed, ", "), ")"));
    }
    for (const std::string& s : seen) {
      if (s == name) {
        return Error(key, path, absl::StrCat("duplicate key ", QuoteYamlValue(name)));
      }
    }
    seen.push_back(name);
    current_key_mark_ = key.Mark();
    if (absl::Status s = fn(name, key, value); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace traffik
