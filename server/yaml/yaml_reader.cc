#include "yaml/yaml_reader.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/host_port.h"

namespace traffik {
namespace {

// Longest user-supplied string quoted verbatim in an error message.
constexpr size_t kMaxQuotedBytes = 80;

constexpr int64_t kSecondMs = 1000;
constexpr int64_t kMinuteMs = 60 * kSecondMs;
constexpr int64_t kHourMs = 60 * kMinuteMs;
constexpr int64_t kDayMs = 24 * kHourMs;

// Debian's abseil is built with its own absl::string_view (not std's).
absl::string_view Absl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

std::string Quote(std::string_view s) { return QuoteYamlValue(s); }
std::string Describe(const YAML::Node& node) { return DescribeYamlNode(node); }

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

struct DurationUnit {
  std::string_view name;
  int64_t ms;
};

constexpr DurationUnit kDurationUnits[] = {
    {"ms", 1}, {"s", 1'000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000},
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::string QuoteYamlValue(std::string_view s) {
  if (s.size() > kMaxQuotedBytes) {
    return absl::StrCat("'", absl::CHexEscape(Absl(s.substr(0, kMaxQuotedBytes))),
                        "...'");
  }
  return absl::StrCat("'", absl::CHexEscape(Absl(s)), "'");
}

std::optional<unsigned char> FindControlCharacter(std::string_view s) {
  for (unsigned char c : s) {
    if (IsControl(c)) return c;
  }
  return std::nullopt;
}

std::string FormatDurationMs(int64_t ms) {
  if (ms != 0 && ms % kDayMs == 0) return absl::StrCat(ms / kDayMs, "d");
  if (ms != 0 && ms % kHourMs == 0) return absl::StrCat(ms / kHourMs, "h");
  if (ms != 0 && ms % kMinuteMs == 0) return absl::StrCat(ms / kMinuteMs, "m");
  if (ms != 0 && ms % kSecondMs == 0) return absl::StrCat(ms / kSecondMs, "s");
  return absl::StrCat(ms, "ms");
}

std::string DescribeYamlNode(const YAML::Node& node) {
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

absl::Status YamlReader::Error(const YAML::Mark& mark, std::string_view path,
                               std::string_view problem) const {
  // yaml-cpp marks are 0-based; a null mark (-1) has no position.
  int line = mark.is_null() ? 1 : mark.line + 1;
  int col = mark.is_null() ? 1 : mark.column + 1;
  return absl::InvalidArgumentError(
      absl::StrFormat("%s:%d:%d: %s: %s", source_, line, col, path, problem));
}

absl::Status YamlReader::Error(const YAML::Node& node, std::string_view path,
                               std::string_view problem) const {
  bool use_key = node.IsNull() || node.Mark().is_null();
  return Error(use_key ? current_key_mark_ : node.Mark(), path, problem);
}

absl::StatusOr<std::string> YamlReader::GetString(const YAML::Node& node,
                                                  std::string_view path) const {
  if (!node.IsScalar()) {
    return Error(node, path, absl::StrCat("expected a string, got ", Describe(node)));
  }
  return node.Scalar();
}

absl::StatusOr<uint64_t> YamlReader::GetUint(const YAML::Node& node,
                                             std::string_view path, uint64_t min,
                                             uint64_t max) const {
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

absl::StatusOr<bool> YamlReader::GetBool(const YAML::Node& node,
                                         std::string_view path) const {
  if (node.IsScalar()) {
    if (node.Scalar() == "true") return true;
    if (node.Scalar() == "false") return false;
  }
  return Error(node, path,
               absl::StrCat("expected a boolean (true or false), got ", Describe(node)));
}

absl::StatusOr<double> YamlReader::GetPositiveDouble(const YAML::Node& node,
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

absl::StatusOr<int64_t> YamlReader::GetDuration(const YAML::Node& node,
                                                std::string_view path, int64_t min_ms,
                                                int64_t max_ms, bool zero_allowed) const {
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

absl::StatusOr<std::string> YamlReader::GetAddress(const YAML::Node& node,
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
  switch (SplitHostPort(addr, /*port_required=*/true).problem) {
    case HostPortProblem::kNone:
      break;
    case HostPortProblem::kNoPort:
      return bad("no ':port'");
    case HostPortProblem::kEmptyHost:
      return bad("empty host");
    case HostPortProblem::kUnterminatedBracket:
    case HostPortProblem::kBadBracketedHost:
    case HostPortProblem::kTextAfterBracket:
      return bad("bad [IPv6] host");
    case HostPortProblem::kUnbracketedIpv6:
      return bad("IPv6 hosts must be in brackets, e.g. '[::1]:50051'");
    case HostPortProblem::kEmptyPort:
    case HostPortProblem::kBadPort:
      return bad("port must be 0-65535");
  }
  return addr;
}

absl::StatusOr<uint64_t> YamlReader::GetByteSize(const YAML::Node& node,
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

}  // namespace traffik
