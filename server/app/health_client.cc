#include "app/health_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/stub_options.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";

// grpc.health.v1.HealthCheckResponse.ServingStatus.
constexpr uint64_t kServing = 1;

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

// HealthCheckRequest { string service = 1; }. Proto3 omits an empty string.
std::string EncodeRequest(const std::string& service) {
  std::string out;
  if (!service.empty()) {
    out.push_back(0x0A);  // field 1, wire type 2
    AppendVarint(service.size(), &out);
    out.append(service);
  }
  return out;
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

// HealthCheckResponse { ServingStatus status = 1; }. Unknown fields are
// skipped; a missing status is UNKNOWN (0); the last occurrence wins.
absl::StatusOr<uint64_t> DecodeResponseStatus(std::string_view data) {
  uint64_t status = 0;
  size_t pos = 0;
  while (pos < data.size()) {
    uint64_t tag = 0;
    if (!ReadVarint(data, &pos, &tag)) {
      return absl::DataLossError("truncated field tag");
    }
    const uint64_t field = tag >> 3;
    const uint64_t wire_type = tag & 0x7;
    if (field == 0) return absl::DataLossError("field number 0");
    switch (wire_type) {
      case kWireVarint: {
        uint64_t value = 0;
        if (!ReadVarint(data, &pos, &value)) {
          return absl::DataLossError("truncated varint");
        }
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

}  // namespace

absl::StatusOr<bool> CheckHealth(const std::string& address, const std::string& service,
                                 std::chrono::milliseconds timeout) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);

  const std::string request_bytes = EncodeRequest(service);
  grpc::Slice request_slice(request_bytes);
  grpc::ByteBuffer request(&request_slice, 1);
  grpc::ByteBuffer response;

  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  grpc::Status rpc_status;
  stub.UnaryCall(&context, kCheckMethod, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   std::lock_guard<std::mutex> lock(mu);
                   rpc_status = std::move(status);
                   done = true;
                   done_cv.notify_one();
                 });
  {
    // The deadline bounds the call, so the callback always comes.
    std::unique_lock<std::mutex> lock(mu);
    done_cv.wait(lock, [&] { return done; });
  }

  if (!rpc_status.ok()) {
    std::string message = absl::StrCat("health check of ", address, " (service \"",
                                       service, "\") failed: ");
    if (rpc_status.error_message().empty()) {
      absl::StrAppend(&message, "gRPC code ", static_cast<int>(rpc_status.error_code()));
    } else {
      absl::StrAppend(&message, rpc_status.error_message());
    }
    // grpc::StatusCode and absl::StatusCode share their numeric values.
    return absl::Status(static_cast<absl::StatusCode>(rpc_status.error_code()), message);
  }

  // An empty message (status UNKNOWN) may arrive as no buffer at all.
  grpc::Slice response_slice;
  if (response.Valid() && !response.DumpToSingleSlice(&response_slice).ok()) {
    return absl::DataLossError(
        absl::StrCat("health check of ", address, ": unreadable response"));
  }
  const std::string_view response_bytes(
      reinterpret_cast<const char*>(response_slice.begin()), response_slice.size());
  absl::StatusOr<uint64_t> serving_status = DecodeResponseStatus(response_bytes);
  if (!serving_status.ok()) {
    return absl::DataLossError(
        absl::StrCat("health check of ", address,
                     ": malformed response: ", serving_status.status().message()));
  }
  return *serving_status == kServing;
}

}  // namespace traffik
