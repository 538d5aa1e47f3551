#include "base/quote.h"

#include "absl/strings/str_cat.h"

namespace traffik {

std::string QuoteForMessage(absl::string_view bytes, size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  const absl::string_view shown = bytes.substr(0, max);
  std::string out;
  out.reserve(shown.size() + 2);
  out.push_back('\'');
  for (const char ch : shown) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\'':
        out.append("\\'");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out.push_back(ch);
        } else {
          out.append("\\x");
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xf]);
        }
    }
  }
  if (shown.size() < bytes.size()) {
    // U+2026 HORIZONTAL ELLIPSIS, then the full length.
    absl::StrAppend(&out, "\xE2\x80\xA6' (", bytes.size(), " bytes)");
  } else {
    out.push_back('\'');
  }
  return out;
}

}  // namespace traffik
