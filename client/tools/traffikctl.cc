// traffikctl: probe a running traffikd from the command line, through the
// Traffik client library.
//
//   traffikctl [--target HOST:PORT] [--deadline-ms N] [--json]
//              [--tls-ca PATH] [--tls-cert PATH --tls-key PATH] [--tls-server-name NAME]
//              [--api-key-file PATH | --api-key-env VAR] COMMAND ...
//     check UID IDENTIFIER [--tenant T] [--cost N] [--limit N --period-ms MS]
//     batch [--all-or-nothing]  (requests on stdin, one a line:
//               UID IDENTIFIER [tenant=T] [cost=N] [limit=N period_ms=MS])
//     health [--service NAME]
//   Admin (traffik.v1.AdminService; the server needs `admin_api: true`):
//     reset [UID [IDENTIFIER]] [--tenant T]
//     peek UID IDENTIFIER [--tenant T] [--cost N] [--limit N --period-ms MS]
//     throttles [--tenant T]
//
//   traffikctl --version
//
// Exit code: 0 allowed / serving; 1 throttled (batch: any item throttled;
// peek: a hit would be throttled) / not serving; 2 error (bad usage,
// unreachable, an error from the server).

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client_impl.h"  // client_internal::MakeChannel, for the admin stub
#include "grpcpp/grpcpp.h"
#include "traffik/client.h"
#include "traffik/v1/admin.grpc.pb.h"

namespace traffik::ctl {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitThrottled = 1;
constexpr int kExitError = 2;

constexpr char kUsage[] =
    "usage: traffikctl [--target HOST:PORT] [--deadline-ms N] [--json] COMMAND ...\n"
    "\n"
    "commands:\n"
    "  check UID IDENTIFIER [--tenant T] [--cost N] [--limit N --period-ms MS]\n"
    "      decide one hit (takes its tokens when allowed)\n"
    "  batch [--all-or-nothing]\n"
    "      decide the hits read from stdin in one batch, one a line:\n"
    "        UID IDENTIFIER [tenant=T] [cost=N] [limit=N period_ms=MS]\n"
    "      (blank lines and lines starting with # are skipped); one line per\n"
    "      hit, then a verdict line. --all-or-nothing: the tokens are taken\n"
    "      only if every hit is allowed (traffikd: all on one backend)\n"
    "  health [--service NAME]\n"
    "      ask the gRPC health service\n"
    "\n"
    "admin commands (traffik.v1.AdminService: the server needs admin_api: true):\n"
    "  reset [UID [IDENTIFIER]] [--tenant T]\n"
    "      forget one bucket (UID IDENTIFIER: its configured and inline-spec\n"
    "      buckets), every bucket of a throttle (UID), or of the tenant (none)\n"
    "  peek UID IDENTIFIER [--tenant T] [--cost N] [--limit N --period-ms MS]\n"
    "      the bucket as it stands and the wait a hit of N would get; takes nothing\n"
    "  throttles [--tenant T]\n"
    "      the tenant's configured throttles (after its quota multiplier)\n"
    "\n"
    "options:\n"
    "  --target HOST:PORT   traffikd's gRPC address (default 127.0.0.1:50051)\n"
    "  --deadline-ms N      per-RPC deadline in milliseconds (default 1000)\n"
    "  --json               machine-readable output on stdout\n"
    "  --version            print traffikctl's version and exit\n"
    "  --tls                TLS, trusting the system's CAs (implied by --tls-*)\n"
    "  --tls-ca PATH        TLS, trusting this CA bundle (PEM) for the server\n"
    "  --tls-cert PATH      with --tls-key: a client certificate (mutual TLS)\n"
    "  --tls-key PATH       the client certificate's key\n"
    "  --tls-server-name N  the name the server's certificate must carry\n"
    "                       (default: the host of --target)\n"
    "  --api-key-file PATH  send the API key in PATH (one trailing newline\n"
    "                       stripped) as authorization: Bearer <key>\n"
    "  --api-key-env VAR    the same, with the key in environment variable VAR\n"
    "                       (never put a key itself on the command line)\n"
    "\n"
    "exit code: 0 allowed / serving, 1 throttled / not serving, 2 error\n"
    "(peek: 0 a hit would be allowed, 1 it would be throttled)\n";

// The parsed command line.
struct Args {
  std::string target = "127.0.0.1:50051";
  int64_t deadline_ms = 1000;
  bool json = false;
  bool version = false;  // --version
  std::string command;
  std::vector<std::string> positional;       // after the command
  std::map<std::string, std::string> flags;  // command flags, without "--"
                                             // (a switch: value "")
  std::optional<ClientTlsOptions> tls;       // --tls, --tls-*
  std::optional<std::string> api_key_file;   // --api-key-file
  std::optional<std::string> api_key_env;    // --api-key-env
  // Set by Main from the above: what every RPC uses.
  ClientOptions connection;
  std::shared_ptr<grpc::Channel> admin_channel;
};

// Which command flags each command takes (all take a value).
const std::map<std::string, std::set<std::string>>& CommandFlags() {
  static const auto* flags = new std::map<std::string, std::set<std::string>>{
      {"check", {"tenant", "cost", "limit", "period-ms"}},
      {"batch", {"all-or-nothing"}},
      {"health", {"service"}},
      {"reset", {"tenant"}},
      {"peek", {"tenant", "cost", "limit", "period-ms"}},
      {"throttles", {"tenant"}},
  };
  return *flags;
}

// Command flags that take no value.
bool IsSwitch(const std::string& name) { return name == "all-or-nothing"; }

// The flags every command takes (besides --json, --help, --version, --tls).
bool IsGlobalFlag(const std::string& name) {
  return name == "target" || name == "deadline-ms" || name == "tls-ca" ||
         name == "tls-cert" || name == "tls-key" || name == "tls-server-name" ||
         name == "api-key-file" || name == "api-key-env";
}

// True when some command takes --`name`.
bool IsCommandFlag(const std::string& name) {
  for (const auto& [command, flags] : CommandFlags()) {
    if (flags.count(name) != 0) return true;
  }
  return false;
}

// A flag name from the command line, quoted, escaped and truncated for a message.
std::string QuotedFlag(const std::string& name) {
  constexpr size_t kMaxShown = 64;
  std::string out = "\"--";
  for (size_t i = 0; i < name.size() && i < kMaxShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (name.size() > kMaxShown) out += "...";
  return out + "\"";
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += "\"";
  return out;
}

// Reports an error (stderr; and stdout as JSON with --json); returns kExitError.
int ReportError(bool json, const absl::Status& status) {
  std::fprintf(stderr, "traffikctl: %s: %s\n",
               std::string(absl::StatusCodeToString(status.code())).c_str(),
               std::string(status.message()).c_str());
  if (json) {
    std::printf("{\"error\":{\"code\":%s,\"message\":%s}}\n",
                JsonString(absl::StatusCodeToString(status.code())).c_str(),
                JsonString(std::string(status.message())).c_str());
  }
  return kExitError;
}

int UsageError(bool json, const std::string& message) {
  std::fprintf(stderr, "%s", kUsage);
  return ReportError(json, absl::InvalidArgumentError(message));
}

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.size() < 2 || arg.compare(0, 2, "--") != 0 || arg == "--") {
      if (args.command.empty()) {
        args.command = arg;
      } else {
        args.positional.push_back(arg);
      }
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (name == "json") {
      if (value.has_value()) return absl::InvalidArgumentError("--json takes no value");
      args.json = true;
      continue;
    }
    if (name == "help") return absl::CancelledError("help");
    if (name == "version") {
      if (value.has_value())
        return absl::InvalidArgumentError("--version takes no value");
      args.version = true;
      continue;
    }
    if (!IsGlobalFlag(name) && !IsCommandFlag(name) && name != "tls") {
      // Before taking a value: an unknown flag must not swallow the command.
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", QuotedFlag(name)));
    }
    if (IsSwitch(name)) {
      if (value.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      args.flags[name] = "";
      continue;
    }
    if (name == "tls") {
      if (value.has_value()) return absl::InvalidArgumentError("--tls takes no value");
      if (!args.tls) args.tls.emplace();
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      value = argv[++i];
    }
    if (name == "tls-ca" || name == "tls-cert" || name == "tls-key" ||
        name == "tls-server-name") {
      if (value->empty())
        return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      if (!args.tls) args.tls.emplace();
      (name == "tls-ca"     ? args.tls->ca_file
       : name == "tls-cert" ? args.tls->cert_file
       : name == "tls-key"  ? args.tls->key_file
                            : args.tls->server_name) = *value;
    } else if (name == "api-key-file") {
      args.api_key_file = *value;
    } else if (name == "api-key-env") {
      args.api_key_env = *value;
    } else if (name == "target") {
      args.target = *value;
    } else if (name == "deadline-ms") {
      if (!absl::SimpleAtoi(*value, &args.deadline_ms) || args.deadline_ms <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--deadline-ms wants a positive integer, got \"", *value, "\""));
      }
    } else {
      args.flags[name] = *value;
    }
  }
  if (args.api_key_file && args.api_key_env) {
    return absl::InvalidArgumentError(
        "--api-key-file and --api-key-env exclude each other");
  }
  if (args.version) return args;
  if (args.command.empty()) return absl::InvalidArgumentError("no command given");
  const auto command = CommandFlags().find(args.command);
  if (command == CommandFlags().end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown command \"", args.command, "\""));
  }
  for (const auto& [name, value] : args.flags) {
    if (command->second.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " for ", args.command));
    }
  }
  return args;
}

absl::Status ParseUint(const std::string& what, const std::string& text, uint64_t max,
                       uint64_t* out) {
  if (!absl::SimpleAtoi(text, out) || *out > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " wants an integer from 0 to ", max, ", got \"", text, "\""));
  }
  return absl::OkStatus();
}

// Fills cost and spec of `request` from textual fields (any may be absent).
absl::Status FillRequest(const std::optional<std::string>& tenant,
                         const std::optional<std::string>& cost,
                         const std::optional<std::string>& limit,
                         const std::optional<std::string>& period_ms,
                         const std::string& limit_name, const std::string& period_name,
                         ThrottleRequest* request) {
  if (tenant.has_value()) request->tenant = *tenant;
  if (cost.has_value()) {
    uint64_t value = 0;
    if (absl::Status s = ParseUint("cost", *cost, UINT32_MAX, &value); !s.ok()) return s;
    request->cost = static_cast<uint32_t>(value);
  }
  if (limit.has_value() != period_ms.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(limit_name, " and ", period_name, " go together"));
  }
  if (limit.has_value()) {
    ThrottleSpec spec;
    uint64_t period = 0;
    if (absl::Status s = ParseUint(limit_name, *limit, UINT64_MAX, &spec.limit);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = ParseUint(period_name, *period_ms, INT64_MAX, &period);
        !s.ok()) {
      return s;
    }
    spec.period = std::chrono::milliseconds(static_cast<int64_t>(period));
    request->spec = spec;
  }
  return absl::OkStatus();
}

std::optional<std::string> Flag(const Args& args, const std::string& name) {
  const auto it = args.flags.find(name);
  if (it == args.flags.end()) return std::nullopt;
  return it->second;
}

// Retry-After in whole seconds, rounded up.
int64_t RetryAfterSeconds(std::chrono::milliseconds wait) {
  return (wait.count() + 999) / 1000;
}

std::string HumanResult(const ThrottleResult& result) {
  return absl::StrCat(
      result.allowed ? "allowed" : "throttled", " wait_ms=", result.wait.count(),
      result.allowed ? ""
                     : absl::StrCat(" retry_after_s=", RetryAfterSeconds(result.wait)),
      " limit=", result.limit, " remaining=", result.remaining,
      " reset_ms=", result.reset.count());
}

std::string JsonResultFields(const ThrottleResult& result) {
  return absl::StrCat("\"allowed\":", result.allowed ? "true" : "false",
                      ",\"wait_ms\":", result.wait.count(),
                      ",\"retry_after_s\":", RetryAfterSeconds(result.wait),
                      ",\"limit\":", result.limit, ",\"remaining\":", result.remaining,
                      ",\"reset_ms\":", result.reset.count());
}

// The key of --api-key-file / --api-key-env, one trailing newline stripped
// (as a Kubernetes Secret file or `echo` leaves it); "" without either.
// Errors never show the key.
absl::StatusOr<std::string> ReadApiKey(const Args& args) {
  std::string key;
  if (args.api_key_file) {
    std::ifstream in(*args.api_key_file, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("--api-key-file: cannot read '", *args.api_key_file, "'"));
    }
    key.resize(kMaxApiKeyBytes + 3);
    in.read(key.data(), static_cast<std::streamsize>(key.size()));
    key.resize(static_cast<size_t>(in.gcount()));
  } else if (args.api_key_env) {
    const char* value = std::getenv(args.api_key_env->c_str());
    if (value == nullptr) {
      return absl::NotFoundError(absl::StrCat("--api-key-env: environment variable ",
                                              *args.api_key_env, " is not set"));
    }
    key = value;
  } else {
    return std::string();
  }
  if (!key.empty() && key.back() == '\n') key.pop_back();
  if (!key.empty() && key.back() == '\r') key.pop_back();
  if (key.empty()) {
    return absl::InvalidArgumentError(args.api_key_file
                                          ? "--api-key-file: the file is empty"
                                          : "--api-key-env: the variable is empty");
  }
  return key;
}

absl::StatusOr<ClientOptions> ConnectionOptions(const Args& args) {
  ClientOptions options;
  options.target = args.target;
  options.deadline = std::chrono::milliseconds(args.deadline_ms);
  options.failure_policy = FailurePolicy::kRaise;
  options.short_circuit_max_keys = 0;       // one-shot process: nothing to remember
  options.log = [](const std::string&) {};  // errors are reported by main
  options.tls = args.tls;
  absl::StatusOr<std::string> key = ReadApiKey(args);
  if (!key.ok()) return key.status();
  options.api_key = *std::move(key);
  return options;
}

int RunCheck(const Args& args, Client& client) {
  if (args.positional.size() != 2) {
    return UsageError(args.json, "check wants UID IDENTIFIER");
  }
  ThrottleRequest request;
  request.throttle_uid = args.positional[0];
  request.identifier = args.positional[1];
  if (absl::Status s =
          FillRequest(Flag(args, "tenant"), Flag(args, "cost"), Flag(args, "limit"),
                      Flag(args, "period-ms"), "--limit", "--period-ms", &request);
      !s.ok()) {
    return UsageError(args.json, std::string(s.message()));
  }
  const absl::StatusOr<ThrottleResult> result = client.Check(request);
  if (!result.ok()) return ReportError(args.json, result.status());
  if (args.json) {
    std::printf("{%s}\n", JsonResultFields(*result).c_str());
  } else {
    std::printf("%s\n", HumanResult(*result).c_str());
  }
  return result->allowed ? kExitOk : kExitThrottled;
}

// Parses one stdin line of `batch`.
absl::StatusOr<ThrottleRequest> ParseBatchLine(absl::string_view line) {
  std::vector<std::string> fields =
      absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (fields.size() < 2)
    return absl::InvalidArgumentError("wants UID IDENTIFIER [key=value...]");
  ThrottleRequest request;
  request.throttle_uid = fields[0];
  request.identifier = fields[1];
  std::map<std::string, std::string> named;
  for (size_t i = 2; i < fields.size(); ++i) {
    const size_t eq = fields[i].find('=');
    const std::string key = fields[i].substr(0, eq);
    if (eq == std::string::npos ||
        (key != "tenant" && key != "cost" && key != "limit" && key != "period_ms")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", fields[i], "\" (want tenant=, cost=, limit=, period_ms=)"));
    }
    named[key] = fields[i].substr(eq + 1);
  }
  auto get = [&](const std::string& key) -> std::optional<std::string> {
    const auto it = named.find(key);
    if (it == named.end()) return std::nullopt;
    return it->second;
  };
  if (absl::Status s = FillRequest(get("tenant"), get("cost"), get("limit"),
                                   get("period_ms"), "limit", "period_ms", &request);
      !s.ok()) {
    return s;
  }
  return request;
}

int RunBatch(const Args& args, Client& client) {
  if (!args.positional.empty())
    return UsageError(args.json, "batch reads its requests from stdin");
  std::vector<ThrottleRequest> requests;
  std::string line;
  for (int number = 1; std::getline(std::cin, line); ++number) {
    const size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos || line[start] == '#') continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    absl::StatusOr<ThrottleRequest> request = ParseBatchLine(line);
    if (!request.ok()) {
      return ReportError(args.json,
                         absl::InvalidArgumentError(absl::StrCat(
                             "stdin line ", number, ": ", request.status().message())));
    }
    requests.push_back(*std::move(request));
  }
  if (requests.empty()) {
    return ReportError(args.json,
                       absl::InvalidArgumentError("batch: no requests on stdin"));
  }

  BatchOptions options;
  options.all_or_nothing = Flag(args, "all-or-nothing").has_value();
  const absl::StatusOr<BatchResult> results = client.CheckBatch(requests, options);
  if (!results.ok()) return ReportError(args.json, results.status());
  size_t throttled = 0;
  for (const ThrottleResult& result : *results) throttled += result.allowed ? 0 : 1;
  // Every hit may go ahead only when each was allowed and the answers took
  // effect (an all-or-nothing batch with a refused item took nothing).
  const bool all_allowed = throttled == 0 && results->applied;
  if (args.json) {
    std::string out =
        absl::StrCat("{\"allowed\":", all_allowed ? "true" : "false",
                     ",\"applied\":", results->applied ? "true" : "false",
                     ",\"all_or_nothing\":", results->all_or_nothing ? "true" : "false",
                     ",\"results\":[");
    for (size_t i = 0; i < results->size(); ++i) {
      absl::StrAppend(&out, i == 0 ? "" : ",",
                      "{\"throttle_uid\":", JsonString(requests[i].throttle_uid),
                      ",\"identifier\":", JsonString(requests[i].identifier), ",",
                      JsonResultFields((*results)[i]), "}");
    }
    absl::StrAppend(&out, "]}");
    std::printf("%s\n", out.c_str());
  } else {
    for (size_t i = 0; i < results->size(); ++i) {
      std::printf("%s %s %s\n", requests[i].throttle_uid.c_str(),
                  requests[i].identifier.c_str(), HumanResult((*results)[i]).c_str());
    }
    std::string verdict =
        absl::StrCat("verdict: ", all_allowed ? "allowed" : "throttled", " (",
                     results->size() - throttled, " of ", results->size(), " allowed");
    if (results->all_or_nothing) {
      absl::StrAppend(&verdict, results->applied ? "; all-or-nothing: tokens taken"
                                                 : "; all-or-nothing: nothing taken");
    } else if (!results->applied) {
      absl::StrAppend(&verdict, "; nothing taken");
    } else if (throttled != 0) {
      absl::StrAppend(&verdict, "; the allowed hits took their tokens");
    }
    std::printf("%s)\n", verdict.c_str());
  }
  return all_allowed ? kExitOk : kExitThrottled;
}

int RunHealth(const Args& args, Client& client) {
  if (!args.positional.empty()) return UsageError(args.json, "health takes no arguments");
  const std::string service = Flag(args, "service").value_or("");
  const absl::StatusOr<bool> serving = client.Healthy(service);
  if (!serving.ok()) return ReportError(args.json, serving.status());
  if (args.json) {
    std::printf("{\"service\":%s,\"serving\":%s}\n", JsonString(service).c_str(),
                *serving ? "true" : "false");
  } else {
    std::printf("%s\n", *serving ? "SERVING" : "NOT_SERVING");
  }
  return *serving ? kExitOk : kExitThrottled;
}

// --- Admin commands: traffik.v1.AdminService through the generated stub. ---

std::unique_ptr<v1::AdminService::Stub> AdminStub(const Args& args) {
  return v1::AdminService::NewStub(args.admin_channel);
}

// The deadline, and the API key (as the client library sends it).
void SetDeadline(const Args& args, grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(args.deadline_ms));
  if (!args.connection.api_key.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", args.connection.api_key));
  }
}

absl::Status ToAbsl(const grpc::Status& status) {
  // gRPC and absl share the canonical code numbering.
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  // A traffikd without admin_api does not serve AdminService at all.
  const std::string hint =
      code == absl::StatusCode::kUnimplemented
          ? " (is the admin API enabled? it needs admin_api: true in traffikd's config)"
          : "";
  return absl::Status(code, absl::StrCat(status.error_message(), hint));
}

int RunReset(const Args& args) {
  if (args.positional.size() > 2) {
    return UsageError(args.json, "reset wants [UID [IDENTIFIER]]");
  }
  v1::ResetBucketsRequest request;
  request.set_tenant(Flag(args, "tenant").value_or(""));
  if (args.positional.size() >= 1) request.set_throttle_uid(args.positional[0]);
  if (args.positional.size() == 2) request.set_identifier(args.positional[1]);
  v1::ResetBucketsResponse response;
  grpc::ClientContext context;
  SetDeadline(args, &context);
  const grpc::Status status = AdminStub(args)->ResetBuckets(&context, request, &response);
  if (!status.ok()) return ReportError(args.json, ToAbsl(status));
  if (args.json) {
    std::printf("{\"removed\":%llu}\n",
                static_cast<unsigned long long>(response.removed()));
  } else {
    std::printf("removed=%llu\n", static_cast<unsigned long long>(response.removed()));
  }
  return kExitOk;
}

int RunPeek(const Args& args) {
  if (args.positional.size() != 2) {
    return UsageError(args.json, "peek wants UID IDENTIFIER");
  }
  // The same flags as check, parsed the same way.
  ThrottleRequest parsed;
  if (absl::Status s =
          FillRequest(Flag(args, "tenant"), Flag(args, "cost"), Flag(args, "limit"),
                      Flag(args, "period-ms"), "--limit", "--period-ms", &parsed);
      !s.ok()) {
    return UsageError(args.json, std::string(s.message()));
  }
  v1::GetBucketRequest request;
  request.set_throttle_uid(args.positional[0]);
  request.set_identifier(args.positional[1]);
  request.set_tenant(parsed.tenant);
  request.set_cost(parsed.cost);
  if (parsed.spec.has_value()) {
    request.mutable_spec()->set_limit(parsed.spec->limit);
    request.mutable_spec()->set_period_ms(
        static_cast<uint64_t>(parsed.spec->period.count()));
  }
  v1::GetBucketResponse response;
  grpc::ClientContext context;
  SetDeadline(args, &context);
  const grpc::Status status = AdminStub(args)->GetBucket(&context, request, &response);
  if (!status.ok()) return ReportError(args.json, ToAbsl(status));
  const bool allowed = response.wait_ms() == 0;
  const std::chrono::milliseconds wait(static_cast<int64_t>(response.wait_ms()));
  if (args.json) {
    std::printf(
        "{\"allowed\":%s,\"wait_ms\":%llu,\"retry_after_s\":%lld,\"limit\":%llu,"
        "\"remaining\":%llu,\"reset_ms\":%llu}\n",
        allowed ? "true" : "false", static_cast<unsigned long long>(response.wait_ms()),
        static_cast<long long>(RetryAfterSeconds(wait)),
        static_cast<unsigned long long>(response.limit()),
        static_cast<unsigned long long>(response.remaining()),
        static_cast<unsigned long long>(response.reset_ms()));
  } else {
    std::printf(
        "%s\n",
        absl::StrCat(
            allowed ? "would be allowed" : "would be throttled",
            " wait_ms=", response.wait_ms(),
            allowed ? "" : absl::StrCat(" retry_after_s=", RetryAfterSeconds(wait)),
            " limit=", response.limit(), " remaining=", response.remaining(),
            " reset_ms=", response.reset_ms())
            .c_str());
  }
  return allowed ? kExitOk : kExitThrottled;
}

int RunThrottles(const Args& args) {
  if (!args.positional.empty())
    return UsageError(args.json, "throttles takes no arguments");
  v1::ListThrottlesRequest request;
  request.set_tenant(Flag(args, "tenant").value_or(""));
  v1::ListThrottlesResponse response;
  grpc::ClientContext context;
  SetDeadline(args, &context);
  const grpc::Status status =
      AdminStub(args)->ListThrottles(&context, request, &response);
  if (!status.ok()) return ReportError(args.json, ToAbsl(status));
  if (args.json) {
    std::string out = "{\"throttles\":[";
    for (int i = 0; i < response.throttles_size(); ++i) {
      const v1::ThrottleInfo& t = response.throttles(i);
      absl::StrAppend(&out, i == 0 ? "" : ",", "{\"uid\":", JsonString(t.uid()),
                      ",\"limit\":", t.limit(), ",\"period_ms\":", t.period_ms(), "}");
    }
    absl::StrAppend(&out, "]}");
    std::printf("%s\n", out.c_str());
  } else {
    for (const v1::ThrottleInfo& t : response.throttles()) {
      std::printf("%s limit=%llu period_ms=%llu\n", t.uid().c_str(),
                  static_cast<unsigned long long>(t.limit()),
                  static_cast<unsigned long long>(t.period_ms()));
    }
  }
  return kExitOk;
}

int Main(int argc, char** argv) {
  absl::StatusOr<Args> args = ParseArgs(argc, argv);
  if (!args.ok()) {
    if (absl::IsCancelled(args.status())) {  // --help
      std::printf("%s", kUsage);
      return kExitOk;
    }
    bool json = false;
    for (int i = 1; i < argc; ++i) json = json || std::string(argv[i]) == "--json";
    return UsageError(json, std::string(args.status().message()));
  }
  if (args->version) {
    std::printf("traffikctl %s\n", TRAFFIK_VERSION);
    return kExitOk;
  }
  absl::StatusOr<ClientOptions> connection = ConnectionOptions(*args);
  if (!connection.ok()) return ReportError(args->json, connection.status());
  args->connection = *std::move(connection);
  if (args->command == "reset" || args->command == "peek" ||
      args->command == "throttles") {
    if (absl::Status valid = client_internal::ValidateOptions(args->connection);
        !valid.ok()) {
      return ReportError(args->json, valid);
    }
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        client_internal::MakeChannel(args->connection);
    if (!channel.ok()) return ReportError(args->json, channel.status());
    args->admin_channel = *std::move(channel);
  }
  if (args->command == "reset") return RunReset(*args);
  if (args->command == "peek") return RunPeek(*args);
  if (args->command == "throttles") return RunThrottles(*args);
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(args->connection);
  if (!client.ok()) return ReportError(args->json, client.status());
  if (args->command == "check") return RunCheck(*args, **client);
  if (args->command == "batch") return RunBatch(*args, **client);
  return RunHealth(*args, **client);
}

}  // namespace
}  // namespace traffik::ctl

int main(int argc, char** argv) { return traffik::ctl::Main(argc, argv); }
