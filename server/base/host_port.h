#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace traffik {

// The one parser of "host:port" addresses: listen addresses, Redis URLs'
// hosts, the metrics exposer, the addresses traffikd reports.
//
// Accepted: "host:port", "[ipv6]:port" and, when the port is optional,
// "host" and "[ipv6]". A host with a ':' must be in brackets. The port is 1
// to 5 digits, at most 65535 (callers that refuse 0 check it). The host's
// characters are the caller's to check.
enum class HostPortProblem {
  kNone,
  kNoPort,               // no ":port" where one is required
  kEmptyHost,            // ":80", "[]:80", ""
  kUnterminatedBracket,  // "[::1:80"
  kBadBracketedHost,     // "[a[b]]:80"
  kTextAfterBracket,     // "[::1]x"
  kUnbracketedIpv6,      // "::1:80", "fe80::1"
  kEmptyPort,            // "host:"
  kBadPort,              // "host:x", "host:65536"
};

struct HostPort {
  std::string host;  // without brackets
  bool has_port = false;
  uint32_t port = 0;  // when has_port
  HostPortProblem problem = HostPortProblem::kNone;
  // The offending part for kTextAfterBracket / kBadPort messages.
  std::string bad_text;
  bool ok() const { return problem == HostPortProblem::kNone; }
};

HostPort SplitHostPort(absl::string_view address, bool port_required);

// Redis' own "host:port" (CLUSTER SLOTS, MOVED, ASK), whose IPv6 hosts may
// come without brackets: the port follows the last ':'. Lenient: a missing
// or bad port is 0.
HostPort SplitRedisHostPort(absl::string_view address);

// "host:port", with an IPv6 host in brackets.
std::string JoinHostPort(absl::string_view host, uint32_t port);

}  // namespace traffik
