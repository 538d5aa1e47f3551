#include "app/log_handlers.h"

#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

std::atomic<LogSites*> g_sites{nullptr};

// Keeps the last path component, so a site reads "chttp2_transport.cc:1234".
absl::string_view BaseName(const char* path) {
  if (path == nullptr) return "?";
  absl::string_view p(path);
  const size_t slash = p.rfind('/');
  return slash == absl::string_view::npos ? p : p.substr(slash + 1);
}

void GrpcLog(gpr_log_func_args* args) {
  LogSites* sites = g_sites.load(std::memory_order_acquire);
  if (sites == nullptr || args == nullptr) return;
  const std::string site = absl::StrCat("grpc ", BaseName(args->file), ":", args->line);
  sites->Write(site, absl::StrCat("grpc ", gpr_log_severity_string(args->severity), " ",
                                  site, ": ", args->message ? args->message : ""));
}

void ProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                 const std::string& message) {
  LogSites* sites = g_sites.load(std::memory_order_acquire);
  if (sites == nullptr) return;
  static constexpr const char* kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  const int index = static_cast<int>(level);
  const char* name = index >= 0 && index < 4 ? kLevels[index] : "?";
  const std::string site = absl::StrCat("protobuf ", BaseName(filename), ":", line);
  sites->Write(site, absl::StrCat("protobuf ", name, " ", site, ": ", message));
}

}  // namespace

void InstallLogHandlers(LogSites& sites) {
  g_sites.store(&sites, std::memory_order_release);
  if (std::getenv("GRPC_VERBOSITY") == nullptr) {
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
  }
  gpr_set_log_function(&GrpcLog);
  google::protobuf::SetLogHandler(&ProtobufLog);
}

}  // namespace traffik
