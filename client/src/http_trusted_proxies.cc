// Trusted proxies and client-address resolution (traffik/http.h).

#include <arpa/inet.h>

#include <cstring>
#include <string>
#include <string_view>

#include "traffik/http.h"

namespace traffik {
namespace {

using Bytes = unsigned char[16];

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t'))
    text.remove_suffix(1);
  return text;
}

// Parses an IP address into 16 bytes (IPv4 as ::ffff:a.b.c.d). Accepts
// "[v6]", "[v6]:port" and "v4:port" too, as X-Forwarded-For writers vary.
bool ParseIp(std::string_view text, Bytes out, bool* is_v4) {
  text = Trim(text);
  if (text.empty() || text.size() > 64) return false;
  std::string host;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return false;
    host = std::string(text.substr(1, close - 1));
  } else if (text.find(':') != std::string_view::npos &&
             text.find(':') == text.rfind(':') &&
             text.find('.') != std::string_view::npos) {
    host = std::string(text.substr(0, text.find(':')));  // "a.b.c.d:port"
  } else {
    host = std::string(text);
  }
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    std::memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    std::memcpy(out + 12, &v4, 4);
    *is_v4 = true;
    return true;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    std::memcpy(out, &v6, 16);
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0,    0,
                                                  0, 0, 0, 0, 0xff, 0xff};
    *is_v4 = std::memcmp(out, kMapped, 12) == 0;
    return true;
  }
  return false;
}

bool InBlock(const Bytes address, const unsigned char* block, int prefix_bits) {
  const int whole = prefix_bits / 8;
  if (std::memcmp(address, block, static_cast<size_t>(whole)) != 0) return false;
  const int rest = prefix_bits % 8;
  if (rest == 0) return true;
  const unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (address[whole] & mask) == (block[whole] & mask);
}

}  // namespace

std::optional<std::string> NormalizeIpAddress(std::string_view text) {
  Bytes bytes;
  bool is_v4 = false;
  if (!ParseIp(text, bytes, &is_v4)) return std::nullopt;
  char buffer[INET6_ADDRSTRLEN] = {};
  if (is_v4) {
    inet_ntop(AF_INET, bytes + 12, buffer, sizeof(buffer));
  } else {
    inet_ntop(AF_INET6, bytes, buffer, sizeof(buffer));
  }
  return std::string(buffer);
}

absl::StatusOr<TrustedProxies> TrustedProxies::Parse(
    const std::vector<std::string>& entries) {
  TrustedProxies proxies;
  for (const std::string& entry : entries) {
    std::string_view text = Trim(entry);
    const size_t slash = text.find('/');
    std::string_view address = text.substr(0, slash);
    Block block{};
    bool is_v4 = false;
    // Entries are bare addresses: no brackets, no ":port".
    const bool v4_with_port = address.find('.') != std::string_view::npos &&
                              address.find(':') != std::string_view::npos &&
                              address.find(':') == address.rfind(':');
    if (address.empty() || address.front() == '[' || v4_with_port ||
        !ParseIp(address, block.bytes, &is_v4)) {
      return absl::InvalidArgumentError("trusted proxy '" + entry +
                                        "': not an IP address or CIDR block");
    }
    const int max_bits = is_v4 ? 32 : 128;
    int bits = max_bits;
    if (slash != std::string_view::npos) {
      std::string_view digits = text.substr(slash + 1);
      if (digits.empty() || digits.size() > 3) {
        return absl::InvalidArgumentError("trusted proxy '" + entry +
                                          "': bad prefix length");
      }
      bits = 0;
      for (char c : digits) {
        if (c < '0' || c > '9') {
          return absl::InvalidArgumentError("trusted proxy '" + entry +
                                            "': bad prefix length");
        }
        bits = bits * 10 + (c - '0');
      }
      if (bits > max_bits) {
        return absl::InvalidArgumentError("trusted proxy '" + entry +
                                          "': prefix length above " +
                                          std::to_string(max_bits));
      }
    }
    block.prefix_bits = is_v4 ? 96 + bits : bits;
    proxies.blocks_.push_back(block);
  }
  return proxies;
}

bool TrustedProxies::Contains(std::string_view address) const {
  if (blocks_.empty()) return false;
  Bytes bytes;
  bool is_v4 = false;
  if (!ParseIp(address, bytes, &is_v4)) return false;
  for (const Block& block : blocks_) {
    if (InBlock(bytes, block.bytes, block.prefix_bits)) return true;
  }
  return false;
}

std::string ClientAddress(const HttpRequest& request, const TrustedProxies& trusted) {
  std::optional<std::string> peer = NormalizeIpAddress(request.peer_address);
  std::string address = peer.value_or(request.peer_address);
  if (!peer.has_value() || trusted.empty() || !trusted.Contains(*peer)) return address;
  std::optional<std::string> forwarded = request.Header("X-Forwarded-For");
  if (!forwarded.has_value()) return address;
  std::string_view chain = *forwarded;
  while (!chain.empty()) {
    const size_t comma = chain.rfind(',');
    std::string_view entry =
        Trim(comma == std::string_view::npos ? chain : chain.substr(comma + 1));
    chain = comma == std::string_view::npos ? std::string_view() : chain.substr(0, comma);
    if (entry.empty()) continue;
    std::optional<std::string> hop = NormalizeIpAddress(entry);
    if (!hop.has_value()) return address;  // never use garbage as an identity
    address = std::move(*hop);
    if (!trusted.Contains(address)) return address;
  }
  return address;
}

}  // namespace traffik
