#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace traffik {

// TLS for --health-check (flags --tls-ca, --tls-cert, --tls-key,
// --tls-server-name): set when any of them is given.
struct HealthCheckTls {
  std::string ca_file;      // --tls-ca PATH: CA bundle of the server's certificate
  std::string cert_file;    // --tls-cert PATH: client certificate (mutual TLS)
  std::string key_file;     // --tls-key PATH: its key (with --tls-cert)
  std::string server_name;  // --tls-server-name NAME: name to verify; default the host
};

// traffikd's command line. Flags take `--flag value` or `--flag=value`.
struct Options {
  std::optional<std::string> config_path;     // --config PATH
  std::optional<std::string> listen;          // --listen HOST:PORT (overrides the config)
  std::optional<std::string> metrics_listen;  // --metrics-listen HOST:PORT ("" disables)
  bool check_config = false;                  // --check-config: validate and exit
  std::optional<std::string> health_check;    // --health-check ADDR: probe and exit
  std::string health_service;  // --health-service NAME (with --health-check)
  std::optional<HealthCheckTls> health_tls;  // --tls-* (with --health-check)
  bool help = false;                         // --help / -h
  bool version = false;                      // --version
};

// Parses argv. Errors (kInvalidArgument) name the flag: unknown flag, missing
// value, a value given to a switch, a stray argument, a --tls-* flag without
// --health-check, --tls-cert without --tls-key or the reverse.
absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv);

// The --help text.
std::string Usage();

}  // namespace traffik
