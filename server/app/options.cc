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
        name == "--health-check" || name == "--health-service") {
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
      } else {
        options.health_service = *value;
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
  return options;
}

std::string Usage() {
  return R"(usage: traffikd [--config PATH] [--listen HOST:PORT] [--metrics-listen HOST:PORT]
       traffikd --check-config [--config PATH]
       traffikd --health-check HOST:PORT [--health-service NAME]

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
  --version                  print the version and exit
  -h, --help                 print this help and exit

Exit codes: 0 ok, 1 configuration or startup error, 2 bad command line.
)";
}

}  // namespace traffik
