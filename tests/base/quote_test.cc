#include "base/quote.h"

#include <string>

#include "base/utf8.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

// Verifies printable ASCII is kept, quoted.
TEST(QuoteForMessageTest, Plain) {
  EXPECT_EQ(QuoteForMessage("silver"), "'silver'");
  EXPECT_EQ(QuoteForMessage(""), "''");
}

// Verifies quotes, backslashes, newlines, control and non-ASCII bytes are
// escaped, so the result is one printable line.
TEST(QuoteForMessageTest, Escapes) {
  EXPECT_EQ(QuoteForMessage("it's a\\b"), "'it\\'s a\\\\b'");
  EXPECT_EQ(QuoteForMessage("a\nb\r\tc"), "'a\\nb\\r\\tc'");
  EXPECT_EQ(QuoteForMessage(std::string("\0\x1f\x7f\xff\xfe", 5)),
            "'\\x00\\x1f\\x7f\\xff\\xfe'");
  EXPECT_EQ(QuoteForMessage("d\xC3\xA9j\xC3\xA0"), "'d\\xc3\\xa9j\\xc3\\xa0'");
}

// Verifies a long value is cut at 64 bytes with "…" and its full length,
// and a value of exactly 64 bytes is not.
TEST(QuoteForMessageTest, Truncates) {
  const std::string exact(64, 'a');
  EXPECT_EQ(QuoteForMessage(exact), "'" + exact + "'");
  const std::string big(2 << 20, 'x');
  EXPECT_EQ(QuoteForMessage(big),
            "'" + std::string(64, 'x') + "\xE2\x80\xA6' (2097152 bytes)");
  EXPECT_EQ(QuoteForMessage("abcdef", 3), "'abc\xE2\x80\xA6' (6 bytes)");
  // Worst case: every shown byte escaped.
  EXPECT_LE(QuoteForMessage(std::string(1 << 20, '\n')).size(), 4u * 64 + 40);
}

// Verifies the UTF-8 check against RFC 3629's edge cases.
TEST(Utf8Test, Validity) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("ascii"));
  EXPECT_TRUE(IsValidUtf8("d\xC3\xA9j\xC3\xA0 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));
  EXPECT_FALSE(IsValidUtf8("\xff\xfe"));
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xF0\x80\x80\xAF"));  // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xC3\x28"));          // bad continuation
}

}  // namespace
}  // namespace traffik
