// WireIdentifier and IsOutage (traffik/client.h).

#include <openssl/evp.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "traffik/client.h"

namespace traffik {

std::string WireIdentifier(std::string_view identifier, size_t max_identifier_bytes) {
  if (identifier.size() <= max_identifier_bytes) return std::string(identifier);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  // EVP_Digest with SHA-256 fails only on allocation failure; the digest form
  // must never be skipped (an over-long identifier is refused by traffikd),
  // so that is treated like any other allocation failure.
  if (EVP_Digest(identifier.data(), identifier.size(), digest, &digest_size, EVP_sha256(),
                 nullptr) != 1 ||
      digest_size != 32) {
    std::abort();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  out.reserve(kDigestIdentifierBytes);
  for (unsigned int i = 0; i < digest_size; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 0xf]);
  }
  return out;
}

bool IsOutage(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

}  // namespace traffik
