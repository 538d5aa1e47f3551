#include "app/options.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace traffik {

absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      options.help = true;
      continue;
    }
    if (arg.substr(0, 2) != "--") {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    absl::string_view name = arg;
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = std::string(arg.substr(eq + 1));
    }
    auto take_value = [&]() -> absl::StatusOr<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("flag ", name, " needs a value"));
      }
      return std::string(argv[++i]);
    };
    auto as_switch = [&](bool* field) -> absl::Status {
      if (inline_value) {
        return absl::InvalidArgumentError(absl::StrCat("flag ", name, " takes no value"));
      }
      *field = true;
      return absl::OkStatus();
    };
    absl::Status status;
    if (name == "--config" || name == "--listen" || name == "--metrics-listen" ||
        name == "--health-check" || name == "--health-service" || name == "--tls-ca" ||
        name == "--tls-cert" || name == "--tls-key" || name == "--tls-server-name") {
      absl::StatusOr<std::string> value = take_value();
      if (!value.ok()) return value.status();
      if (name == "--config") {
        if (value->empty())
          return absl::InvalidArgumentError("flag --config needs a path");
        options.config_path = *value;
      } else if (name == "--listen") {
        if (value->empty())
          return absl::InvalidArgumentError("flag --listen needs HOST:PORT");
        options.listen = *value;
      } else if (name == "--metrics-listen") {
        options.metrics_listen = *value;
      } else if (name == "--health-check") {
        if (value->empty()) {
          return absl::InvalidArgumentError("flag --health-check needs HOST:PORT");
        }
        options.health_check = *value;
      } else if (name == "--health-service") {
        options.health_service = *value;
      } else {
        if (value->empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("flag ", name, " needs a value"));
        }
        if (!options.health_tls) options.health_tls.emplace();
        HealthCheckTls& tls = *options.health_tls;
        (name == "--tls-ca"     ? tls.ca_file
         : name == "--tls-cert" ? tls.cert_file
         : name == "--tls-key"  ? tls.key_file
                                : tls.server_name) = *value;
      }
    } else if (name == "--check-config") {
      status = as_switch(&options.check_config);
    } else if (name == "--help") {
      status = as_switch(&options.help);
    } else if (name == "--version") {
      status = as_switch(&options.version);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", name, "'"));
    }
    if (!status.ok()) return status;
  }
  if (options.health_tls) {
    if (!options.health_check) {
      return absl::InvalidArgumentError(
          "flags --tls-ca, --tls-cert, --tls-key and --tls-server-name are for "
          "--health-check (the server's TLS is the config's tls:)");
    }
    if (options.health_tls->cert_file.empty() != options.health_tls->key_file.empty()) {
      return absl::InvalidArgumentError("flags --tls-cert and --tls-key go together");
    }
  }
  return options;
}

std::string Usage() {
  return R"(usage: traffikd [--config PATH] [--listen HOST:PORT] [--metrics-listen HOST:PORT]
       traffikd --check-config [--config PATH]
       traffikd --health-check HOST:PORT [--health-service NAME]
                [--tls-ca PATH [--tls-cert PATH --tls-key PATH] [--tls-server-name NAME]]

Traffik's rate-limit decision service (gRPC traffik.v1.ThrottleService).

  --config PATH              YAML configuration; without it an embedded default
                             serves (in-memory backend, tenant "default")
  --listen HOST:PORT         gRPC address (overrides `listen`); port 0 picks one
  --metrics-listen HOST:PORT Prometheus /metrics address (overrides
                             `metrics_listen`); empty disables metrics
  --check-config             validate the configuration and exit (0 = valid)
  --health-check HOST:PORT   ask a running traffikd's gRPC health service and
                             exit 0 if SERVING, 1 otherwise
  --health-service NAME      service name for --health-check (default "")
  --tls-ca PATH              --health-check over TLS: the CA bundle that signs
                             the server's certificate
  --tls-cert PATH            with --tls-key: a client certificate, for a server
                             with tls.require_client_cert
  --tls-key PATH             the client certificate's key
  --tls-server-name NAME     the name the server's certificate must carry
                             (default: the host of HOST:PORT)
  --version                  print the version and exit
  -h, --help                 print this help and exit

Exit codes: 0 ok, 1 configuration or startup error, 2 bad command line.
)";
}

}  // namespace traffik
