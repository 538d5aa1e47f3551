// Fuzz target: the client library's client-address resolution
// (client/src/http_trusted_proxies.cc through traffik/http.h): trusted proxy
// entries (TrustedProxies::Parse), the peer address and X-Forwarded-For
// headers as an attacker sends them (ClientAddress, NormalizeIpAddress).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_input.h"
#include "traffik/http.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  traffik::fuzz::FuzzInput in(data, size);
  const uint8_t counts = in.Byte();
  std::vector<std::string> entries;
  for (int i = 0; i < (counts & 0x3); ++i) entries.emplace_back(in.Field(64));
  absl::StatusOr<traffik::TrustedProxies> trusted =
      traffik::TrustedProxies::Parse(entries);
  if (!trusted.ok()) {
    if (trusted.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    // Fall back to proxies that parse, so the header walk is still exercised.
    trusted = traffik::TrustedProxies::Parse({"10.0.0.0/8", "::1", "fd00::/8"});
    if (!trusted.ok()) std::abort();
  }

  traffik::HttpRequest request;
  request.peer_address = std::string(in.Field(80));
  for (int i = 0; i < ((counts >> 2) & 0x3); ++i) {
    request.headers.emplace_back((counts & 0x10) ? "x-forwarded-for" : "X-Forwarded-For",
                                 std::string(in.Field(1024)));
  }
  const std::string address = traffik::ClientAddress(request, *trusted);

  // The answer is the peer as given, or an address in canonical form: never
  // a fragment of a header the client wrote.
  const std::optional<std::string> peer =
      traffik::NormalizeIpAddress(request.peer_address);
  if (!peer.has_value()) {
    if (address != request.peer_address) std::abort();
  } else {
    const std::optional<std::string> again = traffik::NormalizeIpAddress(address);
    if (!again.has_value() || *again != address) std::abort();
    if (!trusted->Contains(*peer) && address != *peer) std::abort();
  }
  for (const std::string& entry : entries) (void)trusted->Contains(entry);
  (void)traffik::NormalizeIpAddress(in.Rest());
  return 0;
}
