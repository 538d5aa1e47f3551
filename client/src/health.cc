#include "health.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace traffik::client_internal {
namespace {

// Protobuf wire types.
constexpr uint64_t kWireVarint = 0;
constexpr uint64_t kWireFixed64 = 1;
constexpr uint64_t kWireLengthDelimited = 2;
constexpr uint64_t kWireFixed32 = 5;

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// Reads a varint at `*pos`, advancing it. False on truncation or overlong input.
bool ReadVarint(std::string_view data, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= data.size()) return false;
    const auto byte = static_cast<uint8_t>(data[(*pos)++]);
    *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

std::string EncodeHealthCheckRequest(const std::string& service) {
  std::string out;
  if (!service.empty()) {  // proto3 omits an empty string
    out.push_back(0x0A);   // field 1, wire type 2
    AppendVarint(service.size(), &out);
    out.append(service);
  }
  return out;
}

absl::StatusOr<uint64_t> DecodeHealthCheckStatus(std::string_view data) {
  uint64_t status = 0;  // the last occurrence wins
  size_t pos = 0;
  while (pos < data.size()) {
    uint64_t tag = 0;
    if (!ReadVarint(data, &pos, &tag)) return absl::DataLossError("truncated field tag");
    const uint64_t field = tag >> 3;
    const uint64_t wire_type = tag & 0x7;
    if (field == 0) return absl::DataLossError("field number 0");
    switch (wire_type) {
      case kWireVarint: {
        uint64_t value = 0;
        if (!ReadVarint(data, &pos, &value))
          return absl::DataLossError("truncated varint");
        if (field == 1) status = value;
        break;
      }
      case kWireFixed64:
      case kWireFixed32: {
        const size_t size = wire_type == kWireFixed64 ? 8 : 4;
        if (data.size() - pos < size) return absl::DataLossError("truncated fixed field");
        pos += size;
        break;
      }
      case kWireLengthDelimited: {
        uint64_t size = 0;
        if (!ReadVarint(data, &pos, &size) || data.size() - pos < size) {
          return absl::DataLossError("truncated length-delimited field");
        }
        pos += size;
        break;
      }
      default:
        return absl::DataLossError(absl::StrCat("unsupported wire type ", wire_type));
    }
  }
  return status;
}

}  // namespace traffik::client_internal
