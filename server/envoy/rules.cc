#include "envoy/rules.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/file.h"
#include "yaml-cpp/yaml.h"
#include "yaml/yaml_reader.h"

namespace traffik::envoy {
namespace internal {
namespace {

constexpr uint64_t kFnvBasis = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

uint64_t Fnv(uint64_t h, absl::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= kFnvPrime;
  }
  return h;
}

// MurmurHash3's finalizer: FNV's low bits alone are weak for a swiss table.
size_t Mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return static_cast<size_t>(h);
}

}  // namespace

size_t CompositeHash::operator()(absl::string_view s) const {
  return Mix(Fnv(kFnvBasis, s));
}

size_t CompositeHash::operator()(const CompositeView& c) const {
  uint64_t h = Fnv(kFnvBasis, c.key);
  if (c.with_value) h = Fnv(Fnv(h, "_"), c.value);
  return Mix(h);
}

bool CompositeEq::operator()(absl::string_view a, const CompositeView& b) const {
  if (!b.with_value) return a == b.key;
  return a.size() == b.key.size() + 1 + b.value.size() && absl::StartsWith(a, b.key) &&
         a[b.key.size()] == '_' && a.substr(b.key.size() + 1) == b.value;
}

}  // namespace internal

namespace {

using internal::CompositeView;
using internal::LevelIndex;
using internal::WildcardEntry;

// Per file, as everywhere else in Traffik.
constexpr size_t kMaxRuleFileBytes = 16 << 20;  // 16 MiB

// ---------------------------------------------------------------------------
// Matching.

// A request entry's composite "key_value" as upstream builds it (key, '_',
// value), read in place: the wildcard test runs on it without building it.
class Composite {
 public:
  Composite(absl::string_view key, absl::string_view value) : key_(key), value_(value) {}

  size_t size() const { return key_.size() + 1 + value_.size(); }

  // Whether the bytes at [pos, pos + s.size()) equal `s` (in range).
  bool EqualAt(size_t pos, absl::string_view s) const {
    if (pos + s.size() > size()) return false;
    size_t i = 0;
    // Part in the key.
    if (pos < key_.size()) {
      size_t n = std::min(s.size(), key_.size() - pos);
      if (key_.substr(pos, n) != s.substr(0, n)) return false;
      i = n;
      pos += n;
    }
    if (i == s.size()) return true;
    // The separator.
    if (pos == key_.size()) {
      if (s[i] != '_') return false;
      ++i;
      ++pos;
    }
    if (i == s.size()) return true;
    return value_.substr(pos - key_.size() - 1, s.size() - i) == s.substr(i);
  }

  // The first position p in [from, to - needle.size()] where `needle`
  // starts, or npos. Inside the value this is string_view::find; only the
  // positions in the key and at the separator are tried one by one.
  size_t Find(absl::string_view needle, size_t from, size_t to) const {
    if (to < from || to - from < needle.size()) return absl::string_view::npos;
    const size_t value_start = key_.size() + 1;
    size_t p = from;
    for (; p < value_start && p + needle.size() <= to; ++p) {
      if (EqualAt(p, needle)) return p;
    }
    if (p + needle.size() > to) return absl::string_view::npos;
    absl::string_view region = value_.substr(p - value_start, to - p);
    size_t found = region.find(needle);
    return found == absl::string_view::npos ? found : p + found;
  }

 private:
  absl::string_view key_;
  absl::string_view value_;
};

// upstream's wildcardMatch: each '*' matches zero or more bytes; the first
// part is a prefix, the last a suffix, the ones between found in order
// (leftmost first) between them.
bool WildcardMatches(const std::vector<std::string>& parts, const Composite& c) {
  if (parts.size() == 1) return c.size() == parts[0].size() && c.EqualAt(0, parts[0]);
  const std::string& first = parts.front();
  const std::string& last = parts.back();
  if (!c.EqualAt(0, first)) return false;
  if (last.size() > c.size() || !c.EqualAt(c.size() - last.size(), last)) return false;
  size_t fixed = 0;
  for (const std::string& p : parts) fixed += p.size();
  if (c.size() < fixed) return false;
  size_t from = first.size();
  const size_t to = c.size() - last.size();
  for (size_t i = 1; i + 1 < parts.size(); ++i) {
    size_t at = c.Find(parts[i], from, to);
    if (at == absl::string_view::npos) return false;
    from = at + parts[i].size();
  }
  return true;
}

// One level of upstream's GetLimit: the exact "key_value", else the first
// wildcard (file order) matching "key_value", else the bare "key".
const Rule* Step(const std::vector<Rule>& nodes, const LevelIndex& index, const Entry& e,
                 bool* via_wildcard) {
  *via_wildcard = false;
  auto it = index.exact.find(CompositeView{e.key, e.value, true});
  if (it != index.exact.end()) return &nodes[it->second];
  if (!index.wildcards.empty()) {
    const Composite c(e.key, e.value);
    for (const WildcardEntry& w : index.wildcards) {
      if (WildcardMatches(w.parts, c)) {
        *via_wildcard = true;
        return &nodes[w.child];
      }
    }
  }
  it = index.exact.find(CompositeView{e.key, {}, false});
  if (it != index.exact.end()) return &nodes[it->second];
  return nullptr;
}

// The bucket value of an entry matched by a share_threshold wildcard:
// upstream trims the request's "key_" from the rule's composite.
absl::string_view SharedValue(const Rule& rule, absl::string_view key) {
  absl::string_view composite = rule.composite;
  if (composite.size() > key.size() && absl::StartsWith(composite, key) &&
      composite[key.size()] == '_') {
    return composite.substr(key.size() + 1);
  }
  return composite;
}

void AppendPiece(std::string& out, absl::string_view s) {
  absl::StrAppend(&out, s.size(), ":");
  out.append(s.data(), s.size());
}

size_t DecimalDigits(size_t n) {
  size_t d = 1;
  while (n >= 10) {
    n /= 10;
    ++d;
  }
  return d;
}

// ---------------------------------------------------------------------------
// Parsing: yaml-cpp, read with the resolution rules of upstream's parser
// (gopkg.in/yaml.v2, YAML 1.1 scalars) so the same files mean the same.

enum class Kind { kNull, kBool, kInt, kFloat, kString, kMap, kList, kOther };

struct Scalar {
  Kind kind = Kind::kNull;
  bool b = false;
  // kInt: the value; `negative` with `magnitude` (so the whole uint64 range
  // of a plain integer is representable).
  bool negative = false;
  uint64_t magnitude = 0;
  bool int_overflow = false;  // beyond int64: refused as upstream does
};

bool IsDigitIn(char c, int base) {
  if (base == 16) return absl::ascii_isxdigit(static_cast<unsigned char>(c));
  return c >= '0' && c < '0' + base;
}

// Go's strconv.ParseInt/ParseUint(s, 0, 64) after yaml.v2 removed every '_':
// optional sign, 0x / 0o / 0b prefixes, a leading 0 meaning octal.
bool ParseGoInt(std::string_view text, Scalar* out) {
  std::string s;
  for (char c : text) {
    if (c != '_') s.push_back(c);
  }
  size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    negative = s[i] == '-';
    ++i;
  }
  int base = 10;
  if (s.size() - i >= 2 && s[i] == '0') {
    char p = absl::ascii_tolower(static_cast<unsigned char>(s[i + 1]));
    if (p == 'x')
      base = 16, i += 2;
    else if (p == 'o')
      base = 8, i += 2;
    else if (p == 'b')
      base = 2, i += 2;
    else
      base = 8, i += 1;
  }
  if (i >= s.size()) return false;
  unsigned __int128 v = 0;
  bool overflow = false;
  for (; i < s.size(); ++i) {
    if (!IsDigitIn(s[i], base)) return false;
    int d = absl::ascii_isdigit(static_cast<unsigned char>(s[i]))
                ? s[i] - '0'
                : absl::ascii_tolower(static_cast<unsigned char>(s[i])) - 'a' + 10;
    v = v * base + d;
    if (v > std::numeric_limits<uint64_t>::max()) overflow = true, v = 0;
  }
  out->kind = Kind::kInt;
  out->negative = negative;
  out->magnitude = static_cast<uint64_t>(v);
  // Outside int64, yaml.v2 makes it a uint64 or a float, which upstream's key
  // check (string, int, bool or null only) refuses.
  out->int_overflow =
      overflow ||
      out->magnitude > (negative
                            ? uint64_t{1} << 63
                            : static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  return true;
}

// yaml.v2's yamlStyleFloat: ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$
bool IsYamlFloat(std::string_view s) {
  static const char* const kSpecial[] = {".inf",  ".Inf",  ".INF",  "+.inf",
                                         "+.Inf", "+.INF", "-.inf", "-.Inf",
                                         "-.INF", ".nan",  ".NaN",  ".NAN"};
  for (const char* k : kSpecial) {
    if (s == k) return true;
  }
  size_t i = 0;
  auto digits = [&]() {
    size_t start = i;
    while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i;
    return i - start;
  };
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (digits() == 0) return false;
  } else {
    if (digits() == 0) return false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      digits();
    }
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == s.size();
}

Scalar ResolvePlain(const std::string& s) {
  Scalar r;
  static const char* const kNull[] = {"", "~", "null", "Null", "NULL"};
  static const char* const kTrue[] = {"y",    "Y",    "yes", "Yes", "YES", "true",
                                      "True", "TRUE", "on",  "On",  "ON"};
  static const char* const kFalse[] = {"n",     "N",     "no",  "No",  "NO", "false",
                                       "False", "FALSE", "off", "Off", "OFF"};
  for (const char* k : kNull) {
    if (s == k) return r;
  }
  for (const char* k : kTrue) {
    if (s == k) {
      r.kind = Kind::kBool;
      r.b = true;
      return r;
    }
  }
  for (const char* k : kFalse) {
    if (s == k) {
      r.kind = Kind::kBool;
      return r;
    }
  }
  // yaml.v2 tries numbers only for text starting with a digit, a sign or '.'.
  if (!s.empty() && (absl::ascii_isdigit(static_cast<unsigned char>(s[0])) ||
                     s[0] == '+' || s[0] == '-' || s[0] == '.')) {
    if (ParseGoInt(s, &r)) {
      if (r.int_overflow) r.kind = Kind::kFloat;
      return r;
    }
    std::string plain;
    for (char c : s) {
      if (c != '_') plain.push_back(c);
    }
    if (IsYamlFloat(plain)) {
      r.kind = Kind::kFloat;
      return r;
    }
  }
  r.kind = Kind::kString;
  return r;
}

Scalar Resolve(const YAML::Node& node) {
  Scalar r;
  if (!node.IsDefined() || node.IsNull()) return r;
  if (node.IsMap()) {
    r.kind = Kind::kMap;
    return r;
  }
  if (node.IsSequence()) {
    r.kind = Kind::kList;
    return r;
  }
  const std::string& tag = node.Tag();
  if (tag == "?") return ResolvePlain(node.Scalar());  // plain: resolved
  if (tag == "!" || tag == "tag:yaml.org,2002:str") {  // quoted, or !!str
    r.kind = Kind::kString;
    return r;
  }
  if (tag == "tag:yaml.org,2002:int" || tag == "tag:yaml.org,2002:float" ||
      tag == "tag:yaml.org,2002:bool" || tag == "tag:yaml.org,2002:null") {
    Scalar p = ResolvePlain(node.Scalar());
    if (tag == "tag:yaml.org,2002:float" && p.kind == Kind::kInt) p.kind = Kind::kFloat;
    return p;
  }
  r.kind = Kind::kOther;
  return r;
}

std::string Describe(const YAML::Node& node) { return DescribeYamlNode(node); }
std::string Quote(std::string_view s) { return QuoteYamlValue(s); }

// upstream's validKeys: every key of the schema, accepted at every level (a
// key at the wrong level is ignored there, as upstream's non-strict decoding
// does).
const std::vector<std::string>& ValidKeys() {
  static const std::vector<std::string> kKeys = {"domain",
                                                 "key",
                                                 "value",
                                                 "descriptors",
                                                 "rate_limit",
                                                 "unit",
                                                 "requests_per_unit",
                                                 "unlimited",
                                                 "shadow_mode",
                                                 "quota_mode",
                                                 "name",
                                                 "replaces",
                                                 "detailed_metric",
                                                 "value_to_metric",
                                                 "share_threshold",
                                                 "metadata"};
  return kKeys;
}

bool IsValidKey(std::string_view k) {
  for (const std::string& v : ValidKeys()) {
    if (v == k) return true;
  }
  return false;
}

class Parser {
 public:
  explicit Parser(std::string_view source) : reader_(source) {}

  absl::StatusOr<Domain> ParseRoot(const YAML::Node& root);

 private:
  absl::Status Error(const YAML::Node& node, std::string_view path,
                     std::string_view problem) const {
    return reader_.Error(node, path, problem);
  }

  // Checks a map's keys as upstream's validateYamlKeys (strings, known) and
  // calls fn(key, key_node, value) for each; `own` are the keys this level
  // uses, other known keys are checked (Generic) and ignored.
  template <typename Fn>
  absl::Status ForEach(const YAML::Node& map, const std::string& path,
                       const std::vector<std::string>& own, Fn fn);

  // upstream's validateYamlKeys on a value this parser ignores.
  absl::Status Generic(const YAML::Node& node, const std::string& path, int depth);

  absl::Status CheckKey(const YAML::Node& key, const std::string& path) const;

  absl::StatusOr<std::string> String(const YAML::Node& node, const std::string& path);
  absl::StatusOr<bool> Bool(const YAML::Node& node, const std::string& path);
  absl::StatusOr<uint32_t> Uint32(const YAML::Node& node, const std::string& path);

  absl::Status ParseDescriptors(const YAML::Node& node, const std::string& path,
                                std::vector<Rule>& out, int depth);
  absl::Status ParseRule(const YAML::Node& node, const std::string& path, Rule& rule,
                         int depth);
  absl::Status ParseRateLimit(const YAML::Node& node, const std::string& path,
                              RateLimit& limit, std::optional<YAML::Mark>& unit_mark,
                              std::string& unit_text,
                              std::vector<YAML::Mark>& replace_marks);

  // Where a value is, for messages: a null value at its key (yaml-cpp marks
  // an omitted value at the next token).
  static YAML::Mark At(const YAML::Node& key, const YAML::Node& value) {
    return value.IsNull() || value.Mark().is_null() ? key.Mark() : value.Mark();
  }

  YamlReader reader_;
};

// Nesting bound (descriptors within descriptors, or ignored values): far
// beyond any real file, and keeps the recursion bounded.
constexpr int kMaxDepth = 64;

absl::Status Parser::CheckKey(const YAML::Node& key, const std::string& path) const {
  Scalar k = Resolve(key);
  if (k.kind != Kind::kString) {
    return Error(
        key, path,
        absl::StrCat("config error, key is not of type string: ", Describe(key)));
  }
  if (!IsValidKey(key.Scalar())) {
    return Error(
        key, path,
        absl::StrCat("config error, unknown key ", Quote(key.Scalar()),
                     " (expected one of: ", absl::StrJoin(ValidKeys(), ", "), ")"));
  }
  return absl::OkStatus();
}

template <typename Fn>
absl::Status Parser::ForEach(const YAML::Node& map, const std::string& path,
                             const std::vector<std::string>& own, Fn fn) {
  if (!map.IsMap()) {
    return Error(map, path.empty() ? "top level" : path,
                 absl::StrCat("expected a map, got ", Describe(map)));
  }
  const std::string shown = path.empty() ? "top level" : path;
  std::vector<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (absl::Status s = CheckKey(key, shown); !s.ok()) return s;
    const std::string& name = key.Scalar();
    for (const std::string& s : seen) {
      if (s == name)
        return Error(key, shown, absl::StrCat("duplicate key ", Quote(name)));
    }
    seen.push_back(name);
    reader_.set_current_key_mark(key.Mark());
    const std::string field = path.empty() ? name : absl::StrCat(path, ".", name);
    bool used = std::find(own.begin(), own.end(), name) != own.end();
    absl::Status s =
        used ? fn(name, key, value, field)
             : (name == "metadata" ? absl::OkStatus() : Generic(value, field, 0));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Parser::Generic(const YAML::Node& node, const std::string& path, int depth) {
  if (depth > kMaxDepth) return Error(node, path, "nested too deeply");
  Scalar r = Resolve(node);
  switch (r.kind) {
    case Kind::kMap: {
      std::vector<std::string> seen;
      for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node key = it->first;
        const YAML::Node value = it->second;
        if (absl::Status s = CheckKey(key, path); !s.ok()) return s;
        const std::string& name = key.Scalar();
        if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
          return Error(key, path, absl::StrCat("duplicate key ", Quote(name)));
        }
        seen.push_back(name);
        if (name == "metadata") continue;
        reader_.set_current_key_mark(key.Mark());
        if (absl::Status s = Generic(value, absl::StrCat(path, ".", name), depth + 1);
            !s.ok()) {
          return s;
        }
      }
      return absl::OkStatus();
    }
    case Kind::kList: {
      size_t i = 0;
      for (const YAML::Node& e : node) {
        std::string p = absl::StrCat(path, "[", i++, "]");
        if (!e.IsMap()) {
          return Error(e, p,
                       absl::StrCat("config error, yaml file contains list of type other "
                                    "than map: ",
                                    Describe(e)));
        }
        if (absl::Status s = Generic(e, p, depth + 1); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    case Kind::kFloat:
    case Kind::kOther:
      return Error(node, path,
                   absl::StrCat("error checking config: ", Describe(node),
                                " is not a string, an integer or a boolean"));
    default:
      return absl::OkStatus();
  }
}

absl::StatusOr<std::string> Parser::String(const YAML::Node& node,
                                           const std::string& path) {
  Scalar r = Resolve(node);
  switch (r.kind) {
    case Kind::kNull:
      return std::string();
    case Kind::kString:
    case Kind::kInt:
    case Kind::kBool:
      return node.Scalar();  // yaml.v2 keeps the text of a scalar for a string
    case Kind::kFloat:
      return Error(node, path,
                   absl::StrCat("error checking config: ", Describe(node),
                                " is a number with a fraction or exponent; quote it"));
    default:
      return Error(node, path, absl::StrCat("expected a string, got ", Describe(node)));
  }
}

absl::StatusOr<bool> Parser::Bool(const YAML::Node& node, const std::string& path) {
  Scalar r = Resolve(node);
  if (r.kind == Kind::kNull) return false;
  if (r.kind == Kind::kBool) return r.b;
  return Error(node, path,
               absl::StrCat("expected a boolean (true or false), got ", Describe(node)));
}

absl::StatusOr<uint32_t> Parser::Uint32(const YAML::Node& node, const std::string& path) {
  Scalar r = Resolve(node);
  if (r.kind == Kind::kNull) return 0;
  if (r.kind == Kind::kInt && (!r.negative || r.magnitude == 0) &&
      r.magnitude <= std::numeric_limits<uint32_t>::max()) {
    return static_cast<uint32_t>(r.magnitude);
  }
  if (r.kind == Kind::kInt || r.kind == Kind::kFloat) {
    return Error(node, path,
                 absl::StrCat("expected an integer between 0 and 4294967295, got ",
                              Describe(node)));
  }
  return Error(node, path,
               absl::StrCat("expected a non-negative integer, got ", Describe(node)));
}

absl::Status Parser::ParseRateLimit(const YAML::Node& node, const std::string& path,
                                    RateLimit& limit,
                                    std::optional<YAML::Mark>& unit_mark,
                                    std::string& unit_text,
                                    std::vector<YAML::Mark>& replace_marks) {
  return ForEach(
      node, path, {"requests_per_unit", "unit", "unlimited", "name", "replaces"},
      [&](const std::string& key, const YAML::Node& key_node, const YAML::Node& value,
          const std::string& field) -> absl::Status {
        if (key == "requests_per_unit") {
          absl::StatusOr<uint32_t> v = Uint32(value, field);
          if (!v.ok()) return v.status();
          limit.requests_per_unit = *v;
        } else if (key == "unit") {
          absl::StatusOr<std::string> v = String(value, field);
          if (!v.ok()) return v.status();
          unit_text = *v;
          unit_mark = At(key_node, value);
        } else if (key == "unlimited") {
          absl::StatusOr<bool> v = Bool(value, field);
          if (!v.ok()) return v.status();
          limit.unlimited = *v;
        } else if (key == "name") {
          absl::StatusOr<std::string> v = String(value, field);
          if (!v.ok()) return v.status();
          limit.name = *v;
        } else if (key == "replaces") {
          Scalar r = Resolve(value);
          if (r.kind == Kind::kNull) return absl::OkStatus();
          if (r.kind != Kind::kList) {
            return Error(
                value, field,
                absl::StrCat("expected a list of {name: ...}, got ", Describe(value)));
          }
          size_t i = 0;
          for (const YAML::Node& item : value) {
            std::string p = absl::StrCat(field, "[", i++, "]");
            if (!item.IsMap()) {
              return Error(item, p,
                           absl::StrCat("config error, yaml file contains list of type "
                                        "other than map: ",
                                        Describe(item)));
            }
            std::string name;
            YAML::Mark where = item.Mark();
            absl::Status s =
                ForEach(item, p, {"name"},
                        [&](const std::string&, const YAML::Node& k, const YAML::Node& v,
                            const std::string& f) -> absl::Status {
                          absl::StatusOr<std::string> n = String(v, f);
                          if (!n.ok()) return n.status();
                          name = *n;
                          where = At(k, v);
                          return absl::OkStatus();
                        });
            if (!s.ok()) return s;
            limit.replaces.push_back(std::move(name));
            replace_marks.push_back(where);
          }
        }
        return absl::OkStatus();
      });
}

absl::Status Parser::ParseRule(const YAML::Node& node, const std::string& path,
                               Rule& rule, int depth) {
  rule.line = node.Mark().line + 1;
  rule.column = node.Mark().column + 1;
  // Marks, not nodes: assigning to a yaml-cpp Node that refers to a node
  // overwrites that node in the tree.
  YAML::Mark key_mark = node.Mark(), rate_limit_mark;
  std::optional<YAML::Mark> unit_mark;
  std::vector<YAML::Mark> replace_marks;
  std::string unit_text;
  absl::Status s =
      ForEach(node, path,
              {"key", "value", "rate_limit", "descriptors", "shadow_mode", "quota_mode",
               "detailed_metric", "value_to_metric", "share_threshold", "metadata"},
              [&](const std::string& key, const YAML::Node& k, const YAML::Node& value,
                  const std::string& field) -> absl::Status {
                if (key == "key" || key == "value") {
                  absl::StatusOr<std::string> v = String(value, field);
                  if (!v.ok()) return v.status();
                  (key == "key" ? rule.key : rule.value) = *v;
                  if (key == "key") key_mark = At(k, value);
                } else if (key == "rate_limit") {
                  if (value.IsNull()) return absl::OkStatus();  // upstream: no limit
                  rate_limit_mark = k.Mark();
                  RateLimit limit;
                  absl::Status st = ParseRateLimit(value, field, limit, unit_mark,
                                                   unit_text, replace_marks);
                  if (!st.ok()) return st;
                  rule.rate_limit = std::move(limit);
                } else if (key == "descriptors") {
                  return ParseDescriptors(value, field, rule.children, depth + 1);
                } else if (key == "metadata") {
                  // Free-form (upstream returns it in the response's metadata; not
                  // supported here), but a map as upstream's struct requires.
                  if (!value.IsNull() && !value.IsMap()) {
                    return Error(value, field,
                                 absl::StrCat("expected a map, got ", Describe(value)));
                  }
                } else {
                  absl::StatusOr<bool> v = Bool(value, field);
                  if (!v.ok()) return v.status();
                  if (key == "shadow_mode") rule.shadow_mode = *v;
                  if (key == "quota_mode") rule.quota_mode = *v;
                  if (key == "detailed_metric") rule.detailed_metric = *v;
                  if (key == "value_to_metric") rule.value_to_metric = *v;
                  if (key == "share_threshold") {
                    rule.share_threshold = *v;
                  }
                }
                return absl::OkStatus();
              });
  if (!s.ok()) return s;

  if (rule.key.empty()) {
    return reader_.Error(key_mark, absl::StrCat(path, ".key"),
                         "descriptor has empty key");
  }
  // Neither a limit nor children: with a value it exempts that value from the
  // level's bare-key and wildcard rules (upstream's basic_config.yaml relies
  // on it), but a bare key like that answers exactly as no rule would, so it
  // is a mistake (a forgotten rate_limit or descriptors block).
  if (!rule.rate_limit && rule.children.empty() && rule.value.empty()) {
    return reader_.Error(key_mark, path,
                         "descriptor has neither rate_limit nor descriptors (a "
                         "key without a value and limit changes no decision; to "
                         "exempt a value, give the value)");
  }
  if (rule.rate_limit) {
    RateLimit& limit = *rule.rate_limit;
    std::optional<Unit> unit = ParseUnit(unit_text);
    const std::string unit_path = absl::StrCat(path, ".rate_limit.unit");
    if (limit.unlimited) {
      if (unit) {
        return reader_.Error(*unit_mark, unit_path,
                             "should not specify rate limit unit when unlimited");
      }
    } else if (!unit) {
      return reader_.Error(
          unit_mark ? *unit_mark : rate_limit_mark, unit_path,
          absl::StrCat("invalid rate limit unit ", Quote(unit_text),
                       " (expected second, minute, hour, day, week, month or "
                       "year)"));
    }
    if (unit) limit.unit = *unit;
    for (size_t i = 0; i < limit.replaces.size(); ++i) {
      const std::string p = absl::StrCat(path, ".rate_limit.replaces[", i, "].name");
      if (limit.replaces[i].empty()) {
        return reader_.Error(replace_marks[i], p,
                             "should not have an empty replaces entry");
      }
      if (limit.replaces[i] == limit.name) {
        return reader_.Error(replace_marks[i], p,
                             "replaces should not contain name of same descriptor");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::ParseDescriptors(const YAML::Node& node, const std::string& path,
                                      std::vector<Rule>& out, int depth) {
  if (depth > kMaxDepth) return Error(node, path, "descriptors nested too deeply");
  Scalar r = Resolve(node);
  if (r.kind == Kind::kNull) return absl::OkStatus();
  if (r.kind != Kind::kList) {
    return Error(node, path,
                 absl::StrCat("expected a list of descriptors, got ", Describe(node)));
  }
  size_t i = 0;
  for (const YAML::Node& item : node) {
    std::string p = absl::StrCat(path, "[", i++, "]");
    if (!item.IsMap()) {
      return Error(item, p,
                   absl::StrCat("config error, yaml file contains list of type other "
                                "than map: ",
                                Describe(item)));
    }
    Rule rule;
    if (absl::Status s = ParseRule(item, p, rule, depth); !s.ok()) return s;
    out.push_back(std::move(rule));
  }
  return absl::OkStatus();
}

absl::StatusOr<Domain> Parser::ParseRoot(const YAML::Node& root) {
  Domain domain;
  domain.source = reader_.source();
  if (!root.IsDefined() || root.IsNull()) {
    return reader_.Error(YAML::Mark::null_mark(), "domain",
                         "config file cannot have empty domain");
  }
  std::optional<YAML::Mark> domain_mark;
  absl::Status s =
      ForEach(root, "", {"domain", "descriptors"},
              [&](const std::string& key, const YAML::Node& k, const YAML::Node& value,
                  const std::string& field) -> absl::Status {
                if (key == "domain") {
                  absl::StatusOr<std::string> v = String(value, field);
                  if (!v.ok()) return v.status();
                  domain.name = *v;
                  domain_mark = k.Mark();
                  return absl::OkStatus();
                }
                return ParseDescriptors(value, field, domain.descriptors, 0);
              });
  if (!s.ok()) {
    if (!root.IsMap()) {
      return Error(root, "top level",
                   absl::StrCat("expected a map with `domain` and `descriptors`, got ",
                                Describe(root)));
    }
    return s;
  }
  if (domain.name.empty()) {
    return reader_.Error(domain_mark ? *domain_mark : root.Mark(), "domain",
                         "config file cannot have empty domain");
  }
  domain.line = domain_mark->line + 1;
  domain.column = domain_mark->column + 1;
  return domain;
}

// ---------------------------------------------------------------------------
// Indexes and the checks that need a whole level.

std::string Where(const Domain& d, const Rule& r) {
  if (r.line > 0) return absl::StrFormat("%s:%d:%d", d.source, r.line, r.column);
  return absl::StrCat(d.source, ":1:1");
}

// Builds `index` over `nodes` (setting composites and paths) and checks
// what upstream checks per level: a key, unique composites, share_threshold
// only on a wildcard, replaces not empty nor self.
absl::Status BuildLevel(const Domain& domain, std::vector<Rule>& nodes,
                        const std::string& parent_path, const std::string& parent_field,
                        LevelIndex& index, int depth) {
  if (depth > kMaxDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(domain.source, ":1:1: ", parent_field, ": nested too deeply"));
  }
  index = LevelIndex();
  for (size_t i = 0; i < nodes.size(); ++i) {
    Rule& rule = nodes[i];
    const std::string field = absl::StrCat(parent_field, "[", i, "]");
    auto fail = [&](absl::string_view sub, absl::string_view problem) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(domain, rule), ": ", field, sub, ": ", problem));
    };
    if (rule.key.empty()) return fail(".key", "descriptor has empty key");
    rule.composite =
        rule.value.empty() ? rule.key : absl::StrCat(rule.key, "_", rule.value);
    rule.path = parent_path.empty() ? rule.composite
                                    : absl::StrCat(parent_path, ".", rule.composite);
    if (!index.exact.emplace(rule.composite, static_cast<uint32_t>(i)).second) {
      return fail("", absl::StrCat("duplicate descriptor composite key ",
                                   Quote(absl::StrCat(domain.name, ".", rule.path))));
    }
    const bool wildcard = absl::StrContains(rule.composite, '*');
    if (rule.share_threshold && !wildcard) {
      return fail(".share_threshold",
                  absl::StrCat("share_threshold can only be used with wildcard values "
                               "(containing '*'), but found key ",
                               Quote(rule.composite)));
    }
    if (wildcard) {
      WildcardEntry w;
      w.child = static_cast<uint32_t>(i);
      w.parts = absl::StrSplit(rule.composite, '*');
      index.wildcards.push_back(std::move(w));
    }
    if (rule.rate_limit) {
      for (size_t j = 0; j < rule.rate_limit->replaces.size(); ++j) {
        const std::string& name = rule.rate_limit->replaces[j];
        const std::string sub = absl::StrCat(".rate_limit.replaces[", j, "].name");
        if (name.empty()) return fail(sub, "should not have an empty replaces entry");
        if (name == rule.rate_limit->name) {
          return fail(sub, "replaces should not contain name of same descriptor");
        }
      }
    }
    if (absl::Status s =
            BuildLevel(domain, rule.children, rule.path,
                       absl::StrCat(field, ".descriptors"), rule.index, depth + 1);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status BuildIndex(Domain& domain) {
  if (domain.name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        domain.source, ":1:1: domain: config file cannot have empty domain"));
  }
  return BuildLevel(domain, domain.descriptors, "", "descriptors", domain.index, 0);
}

absl::StatusOr<std::string> ReadRuleFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileBounded(path, kMaxRuleFileBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("ratelimit config file ", Quote(path), ": ",
                                     text.status().message()));
  }
  return text;
}

// The rule files of `dirs`, in load order: regular files (symlinks
// followed, as in a ConfigMap mount) ending in ".yaml" or ".yml" directly in
// each directory, names starting with '.' skipped, in name order per
// directory.
absl::StatusOr<std::vector<std::string>> ListRuleFiles(
    const std::vector<std::string>& dirs) {
  std::vector<std::string> paths;
  for (const std::string& dir : dirs) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) {
      int err = errno;
      std::string what = absl::StrCat("envoy config directory ", Quote(dir), ": ");
      if (err == ENOENT)
        return absl::NotFoundError(absl::StrCat(what, "no such directory"));
      if (err == EACCES) {
        return absl::PermissionDeniedError(absl::StrCat(what, "permission denied"));
      }
      return absl::InvalidArgumentError(absl::StrCat(what, std::strerror(err)));
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      absl::string_view name = e->d_name;
      if (name.empty() || name[0] == '.') continue;
      if (!absl::EndsWith(name, ".yaml") && !absl::EndsWith(name, ".yml")) continue;
      names.emplace_back(name.data(), name.size());
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      std::string path = absl::EndsWith(dir, "/") ? absl::StrCat(dir, name)
                                                  : absl::StrCat(dir, "/", name);
      struct stat st;
      // stat, not lstat: a ConfigMap's files are symlinks into ..data.
      if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      paths.push_back(std::move(path));
    }
  }
  return paths;
}

// Two independent 64-bit hashes (FNV-1a and the process' absl::Hash) over
// every file's name and bytes, length-prefixed: for noticing a change, not
// for security (the files are the operator's).
class Digest {
 public:
  void Add(absl::string_view path, absl::string_view text) {
    const std::string head = absl::StrCat(path.size(), ":", path, text.size(), ":");
    fnv_ = internal::Fnv(internal::Fnv(fnv_, head), text);
    other_ = absl::HashOf(other_, head, text);
  }
  std::string Hex() const { return absl::StrFormat("%016x%016x", fnv_, other_); }

 private:
  uint64_t fnv_ = 14695981039346656037ull;
  size_t other_ = 0;
};

}  // namespace

int64_t UnitMs(Unit unit) {
  constexpr int64_t kSecond = 1000, kMinute = 60 * kSecond, kHour = 60 * kMinute,
                    kDay = 24 * kHour;
  switch (unit) {
    case Unit::kSecond:
      return kSecond;
    case Unit::kMinute:
      return kMinute;
    case Unit::kHour:
      return kHour;
    case Unit::kDay:
      return kDay;
    case Unit::kWeek:
      return 7 * kDay;
    case Unit::kMonth:
      return 30 * kDay;
    case Unit::kYear:
      return 365 * kDay;
  }
  return kSecond;
}

std::optional<Unit> ParseUnit(std::string_view text) {
  // Upstream upper-cases with Go's strings.ToUpper, which also maps the two
  // non-ASCII letters whose capitals are ASCII: U+017F (long s) -> 'S' and
  // U+0131 (dotless i) -> 'I'. Fold them the same way.
  std::string folded;
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == 0xC5 && i + 1 < text.size() &&
        static_cast<unsigned char>(text[i + 1]) == 0xBF) {
      folded.push_back('s');
      ++i;
    } else if (c == 0xC4 && i + 1 < text.size() &&
               static_cast<unsigned char>(text[i + 1]) == 0xB1) {
      folded.push_back('i');
      ++i;
    } else {
      folded.push_back(absl::ascii_tolower(c));
    }
  }
  if (folded == "second") return Unit::kSecond;
  if (folded == "minute") return Unit::kMinute;
  if (folded == "hour") return Unit::kHour;
  if (folded == "day") return Unit::kDay;
  if (folded == "week") return Unit::kWeek;
  if (folded == "month") return Unit::kMonth;
  if (folded == "year") return Unit::kYear;
  return std::nullopt;
}

absl::StatusOr<Domain> RuleSet::ParseDomain(std::string_view yaml_text,
                                            std::string_view source) {
  YAML::Node root;
  try {
    // Only the first document counts, as upstream's yaml.Unmarshal.
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    int col = e.mark.is_null() ? 1 : e.mark.column + 1;
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:%d:%d: not valid YAML: %s", source, line, col, e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:1:1: not valid YAML: %s", source, e.what()));
  }
  absl::StatusOr<Domain> domain;
  try {
    Parser parser(source);
    domain = parser.ParseRoot(root);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:1:1: internal error reading YAML: %s", source, e.what()));
  }
  if (!domain.ok()) return domain.status();
  if (absl::Status s = BuildIndex(*domain); !s.ok()) return s;
  return domain;
}

absl::StatusOr<std::shared_ptr<const RuleSet>> RuleSet::FromDomains(
    std::vector<Domain> domains) {
  auto set = std::shared_ptr<RuleSet>(new RuleSet());
  for (size_t i = 0; i < domains.size(); ++i) {
    Domain& d = domains[i];
    if (absl::Status s = BuildIndex(d); !s.ok()) return s;
    auto [it, inserted] = set->by_name_.emplace(d.name, i);
    if (!inserted) {
      const Domain& first = domains[it->second];
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s:%d:%d: domain: duplicate domain %s in config file (already defined in %s)",
          d.source, std::max(d.line, 1), std::max(d.column, 1), Quote(d.name),
          Quote(first.source)));
    }
  }
  set->domains_ = std::move(domains);
  return std::shared_ptr<const RuleSet>(std::move(set));
}

absl::StatusOr<std::shared_ptr<const RuleSet>> RuleSet::LoadDirs(
    const std::vector<std::string>& dirs) {
  absl::StatusOr<std::vector<std::string>> paths = ListRuleFiles(dirs);
  if (!paths.ok()) return paths.status();
  Digest digest;
  std::vector<Domain> domains;
  for (const std::string& path : *paths) {
    absl::StatusOr<std::string> text = ReadRuleFile(path);
    if (!text.ok()) return text.status();
    digest.Add(path, *text);
    absl::StatusOr<Domain> domain = ParseDomain(*text, path);
    if (!domain.ok()) return domain.status();
    domains.push_back(*std::move(domain));
  }
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = FromDomains(std::move(domains));
  if (!set.ok()) return set.status();
  std::const_pointer_cast<RuleSet>(*set)->files_digest_ = digest.Hex();
  return set;
}

absl::StatusOr<std::string> RuleSet::DigestDirs(const std::vector<std::string>& dirs) {
  absl::StatusOr<std::vector<std::string>> paths = ListRuleFiles(dirs);
  if (!paths.ok()) return paths.status();
  Digest digest;
  for (const std::string& path : *paths) {
    absl::StatusOr<std::string> text = ReadRuleFile(path);
    if (!text.ok()) return text.status();
    digest.Add(path, *text);
  }
  return digest.Hex();
}

std::shared_ptr<const RuleSet> RuleSet::Empty() {
  static const std::shared_ptr<const RuleSet> kEmpty(new RuleSet());
  return kEmpty;
}

const Domain* RuleSet::FindDomain(absl::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &domains_[it->second];
}

Match RuleSet::MatchDescriptor(const Domain& domain, absl::Span<const Entry> entries) {
  Match m;
  const std::vector<Rule>* nodes = &domain.descriptors;
  const LevelIndex* index = &domain.index;
  bool any_shared = false;
  for (size_t i = 0; i < entries.size(); ++i) {
    bool via_wildcard = false;
    const Rule* next = Step(*nodes, *index, entries[i], &via_wildcard);
    if (next == nullptr) break;
    any_shared = any_shared || (via_wildcard && next->share_threshold);
    if (next->rate_limit && i + 1 == entries.size()) m.rule = next;
    if (next->children.empty()) break;
    nodes = &next->children;
    index = &next->index;
  }
  if (m.rule == nullptr) return m;
  if (!any_shared) {
    m.bucket_id = EncodeBucketId(entries);
    return m;
  }
  // Walk again (the same steps) to put each shared wildcard's pattern in
  // place of its entry's value; no per-level state kept on the first walk.
  size_t size = 0;
  std::string& id = m.bucket_id;
  for (int pass = 0; pass < 2; ++pass) {
    nodes = &domain.descriptors;
    index = &domain.index;
    for (const Entry& e : entries) {
      bool via_wildcard = false;
      const Rule* next = Step(*nodes, *index, e, &via_wildcard);
      absl::string_view value =
          via_wildcard && next->share_threshold ? SharedValue(*next, e.key) : e.value;
      if (pass == 0) {
        size += DecimalDigits(e.key.size()) + 1 + e.key.size() +
                DecimalDigits(value.size()) + 1 + value.size();
      } else {
        AppendPiece(id, e.key);
        AppendPiece(id, value);
      }
      nodes = &next->children;
      index = &next->index;
    }
    if (pass == 0) id.reserve(size);
  }
  return m;
}

std::string RuleSet::EncodeBucketId(absl::Span<const Entry> entries) {
  size_t size = 0;
  for (const Entry& e : entries) {
    size += DecimalDigits(e.key.size()) + 1 + e.key.size() +
            DecimalDigits(e.value.size()) + 1 + e.value.size();
  }
  std::string id;
  id.reserve(size);
  for (const Entry& e : entries) {
    AppendPiece(id, e.key);
    AppendPiece(id, e.value);
  }
  return id;
}

std::vector<bool> RuleSet::Replaced(absl::Span<const Match> matches) {
  // Every name listed in a matched rule's `replaces` (unlimited and
  // replaced ones included, as upstream collects them first).
  absl::flat_hash_set<absl::string_view> replacing;
  for (const Match& m : matches) {
    if (m.rule == nullptr || !m.rule->rate_limit) continue;
    for (const std::string& name : m.rule->rate_limit->replaces) replacing.insert(name);
  }
  std::vector<bool> replaced(matches.size(), false);
  if (replacing.empty()) return replaced;
  for (size_t i = 0; i < matches.size(); ++i) {
    const Rule* r = matches[i].rule;
    if (r == nullptr || !r->rate_limit || r->rate_limit->unlimited ||
        r->rate_limit->name.empty()) {
      continue;
    }
    replaced[i] = replacing.contains(r->rate_limit->name);
  }
  return replaced;
}

}  // namespace traffik::envoy
