#pragma once

// The connection flags the example apps share with traffikctl:
//   --tls                 TLS, trusting the system's CAs (implied by --tls-*)
//   --tls-ca PATH         TLS, trusting this CA bundle for traffikd
//   --tls-cert PATH       with --tls-key: a client certificate (mutual TLS)
//   --tls-key PATH        its key
//   --tls-server-name N   the name traffikd's certificate must carry
//   --api-key-file PATH   an API key, sent as `authorization: Bearer <key>`
//   --api-key-env VAR     the same, from an environment variable
// A key is never taken on the command line itself (it would show in `ps`).

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>

namespace traffik_examples {

struct CredentialFlags {
  bool tls = false;
  std::string ca_file, cert_file, key_file, server_name;
  std::string api_key_file, api_key_env;
};

inline constexpr char kCredentialUsage[] =
    "[--tls] [--tls-ca PATH] [--tls-cert PATH --tls-key PATH] [--tls-server-name NAME] "
    "[--api-key-file PATH | --api-key-env VAR]";

// True if `arg` is one of the flags above (its value taken with `value`).
inline bool TakeCredentialFlag(const std::string& arg,
                               const std::function<std::string()>& value,
                               CredentialFlags& flags) {
  if (arg == "--tls") {
    flags.tls = true;
  } else if (arg == "--tls-ca") {
    flags.tls = true;
    flags.ca_file = value();
  } else if (arg == "--tls-cert") {
    flags.tls = true;
    flags.cert_file = value();
  } else if (arg == "--tls-key") {
    flags.tls = true;
    flags.key_file = value();
  } else if (arg == "--tls-server-name") {
    flags.tls = true;
    flags.server_name = value();
  } else if (arg == "--api-key-file") {
    flags.api_key_file = value();
  } else if (arg == "--api-key-env") {
    flags.api_key_env = value();
  } else {
    return false;
  }
  return true;
}

// The API key of --api-key-file / --api-key-env (one trailing newline
// stripped), "" without either; exits with status 2 on an error (which never
// shows the key).
inline std::string ApiKeyOrExit(const CredentialFlags& flags, const char* argv0) {
  std::string key;
  if (!flags.api_key_file.empty()) {
    std::ifstream in(flags.api_key_file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: --api-key-file: cannot read %s\n", argv0,
                   flags.api_key_file.c_str());
      std::exit(2);
    }
    std::getline(in, key, '\0');
  } else if (!flags.api_key_env.empty()) {
    const char* value = std::getenv(flags.api_key_env.c_str());
    if (value == nullptr) {
      std::fprintf(stderr, "%s: --api-key-env: %s is not set\n", argv0,
                   flags.api_key_env.c_str());
      std::exit(2);
    }
    key = value;
  } else {
    return key;
  }
  if (!key.empty() && key.back() == '\n') key.pop_back();
  if (!key.empty() && key.back() == '\r') key.pop_back();
  if (key.empty()) {
    std::fprintf(stderr, "%s: the API key is empty\n", argv0);
    std::exit(2);
  }
  return key;
}

// A whole (small) file; exits with status 2 if it cannot be read.
inline std::string ReadFileOrExit(const std::string& path, const char* argv0) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "%s: cannot read %s\n", argv0, path.c_str());
    std::exit(2);
  }
  std::string text;
  std::getline(in, text, '\0');
  return text;
}

}  // namespace traffik_examples
