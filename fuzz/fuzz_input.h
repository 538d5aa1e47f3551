#pragma once

// Splits a fuzzer's bytes into fields. Deterministic and total: any input is
// accepted; past the end every field is empty / zero. Used instead of clang's
// FuzzedDataProvider so the targets also build with gcc (the replay tests).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace traffik::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size)
      : data_(reinterpret_cast<const char*>(data)), size_(size) {}

  // One byte, 0 past the end.
  uint8_t Byte() { return pos_ < size_ ? static_cast<uint8_t>(data_[pos_++]) : 0; }

  // A little-endian integer of `bytes` bytes (at most 8).
  uint64_t Integer(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(Byte()) << (8 * i);
    return v;
  }

  // A field of up to `max` bytes: a 2-byte length, then that many bytes (fewer
  // at the end of the input).
  std::string_view Field(size_t max) {
    size_t n = static_cast<size_t>(Integer(2)) % (max + 1);
    if (n > size_ - pos_) n = size_ - pos_;
    std::string_view out(data_ + pos_, n);
    pos_ += n;
    return out;
  }

  // Everything not consumed yet.
  std::string_view Rest() {
    std::string_view out(data_ + pos_, size_ - pos_);
    pos_ = size_;
    return out;
  }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace traffik::fuzz
