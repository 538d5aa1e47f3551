#include "base/host_port.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Parses 1..5 digits up to 65535 into `*port`.
bool ParsePortNumber(absl::string_view text, uint32_t* port) {
  if (text.empty() || text.size() > 5) return false;
  for (char c : text) {
    if (!IsDigit(c)) return false;
  }
  return absl::SimpleAtoi(text, port) && *port <= 65535;
}

}  // namespace

HostPort SplitHostPort(absl::string_view address, bool port_required) {
  HostPort out;
  absl::string_view host;
  absl::string_view port_text;
  bool has_port = false;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos) {
      out.problem = HostPortProblem::kUnterminatedBracket;
      return out;
    }
    host = address.substr(1, close - 1);
    if (host.find_first_of("[]") != absl::string_view::npos) {
      out.problem = HostPortProblem::kBadBracketedHost;
      return out;
    }
    const absl::string_view rest = address.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        out.problem = HostPortProblem::kTextAfterBracket;
        out.bad_text = std::string(rest);
        return out;
      }
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    const size_t colon = address.find(':');
    host = address.substr(0, colon);
    if (colon != absl::string_view::npos) {
      has_port = true;
      port_text = address.substr(colon + 1);
      if (port_text.find(':') != absl::string_view::npos) {
        out.problem = HostPortProblem::kUnbracketedIpv6;
        return out;
      }
    }
    if (host.find_first_of("[]") != absl::string_view::npos) {
      out.problem = HostPortProblem::kBadBracketedHost;
      return out;
    }
  }
  if (host.empty()) {
    out.problem = HostPortProblem::kEmptyHost;
    return out;
  }
  out.host = std::string(host);
  if (!has_port) {
    if (port_required) out.problem = HostPortProblem::kNoPort;
    return out;
  }
  out.has_port = true;
  if (port_text.empty()) {
    out.problem = HostPortProblem::kEmptyPort;
    return out;
  }
  if (!ParsePortNumber(port_text, &out.port)) {
    out.problem = HostPortProblem::kBadPort;
    out.bad_text = std::string(port_text);
  }
  return out;
}

HostPort SplitRedisHostPort(absl::string_view address) {
  HostPort out;
  const size_t colon = address.rfind(':');
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  out.host = std::string(host);
  if (colon != absl::string_view::npos) {
    out.has_port = true;
    if (!ParsePortNumber(address.substr(colon + 1), &out.port)) out.port = 0;
  }
  return out;
}

std::string JoinHostPort(absl::string_view host, uint32_t port) {
  if (host.find(':') != absl::string_view::npos) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace traffik
