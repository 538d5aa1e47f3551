#include "backend/redis/redis_factory.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backend/redis/redis_backend.h"
#include "backend/redis/redis_tls.h"

namespace traffik {
namespace {

constexpr uint64_t kMaxRedisPoolSize = 64;

// A tenant's `redis:` map, applied to the parsed backend URL afterwards.
struct RedisSettingsMap {
  std::optional<int64_t> timeout_ms;
  std::optional<int64_t> connect_timeout_ms;
  std::optional<int> pool_size;
  std::optional<std::string> username;
  YAML::Mark username_mark;
  std::optional<std::string> password;  // read from `password_env`
  // `tls:` (only with rediss://), with where each field was written.
  std::optional<RedisTlsOptions> tls;
  YAML::Mark tls_mark;
  YAML::Mark ca_file_mark, cert_file_mark, key_file_mark;
};

constexpr size_t kMaxTlsPathBytes = 4096;

// Parses the `tls:` map; files are checked by CheckTlsFiles afterwards.
absl::Status ParseTlsMap(const YAML::Node& node, const std::string& path,
                         const YamlReader& reader, RedisSettingsMap& settings) {
  RedisTlsOptions tls;
  absl::Status status = reader.ForEachEntry(
      node, path,
      {"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"},
      [&](const std::string& key, const YAML::Node&,
          const YAML::Node& value) -> absl::Status {
        const std::string field = absl::StrCat(path, ".", key);
        if (key == "insecure_skip_verify") {
          absl::StatusOr<bool> skip = reader.GetBool(value, field);
          if (!skip.ok()) return skip.status();
          tls.insecure_skip_verify = *skip;
          return absl::OkStatus();
        }
        absl::StatusOr<std::string> text = reader.GetString(value, field);
        if (!text.ok()) return text.status();
        if (text->empty()) return reader.Error(value, field, "must not be empty");
        if (text->size() > kMaxTlsPathBytes) {
          return reader.Error(value, field,
                              absl::StrCat("longer than ", kMaxTlsPathBytes, " bytes"));
        }
        if (auto c = FindControlCharacter(*text)) {
          return reader.Error(value, field,
                              absl::StrFormat("contains control character 0x%02x", *c));
        }
        if (key == "server_name") {
          // A DNS name or an IP address (checked against the IP SANs).
          for (char c : *text) {
            if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' &&
                c != '.' && c != '_' && c != ':' && c != '*') {
              return reader.Error(value, field,
                                  absl::StrCat("expected a host name or IP address, got ",
                                               QuoteYamlValue(*text)));
            }
          }
          tls.server_name = *text;
        } else if (key == "ca_file") {
          tls.ca_file = *text;
          settings.ca_file_mark = value.Mark();
        } else if (key == "cert_file") {
          tls.cert_file = *text;
          settings.cert_file_mark = value.Mark();
        } else {
          tls.key_file = *text;
          settings.key_file_mark = value.Mark();
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  settings.tls = std::move(tls);
  return absl::OkStatus();
}

// The TLS files exist, are readable and hold what they should (the same
// loading the backend does at start), so a bad path or file fails the load
// (and a reload) instead of every connection later. Errors name the field.
absl::Status CheckTlsFiles(const RedisSettingsMap& settings, const std::string& path,
                           const YamlReader& reader) {
  const RedisTlsOptions& tls = *settings.tls;
  const struct {
    const char* name;
    const std::string& file;
    const YAML::Mark& mark;
  } files[] = {{"ca_file", tls.ca_file, settings.ca_file_mark},
               {"cert_file", tls.cert_file, settings.cert_file_mark},
               {"key_file", tls.key_file, settings.key_file_mark}};
  for (const auto& f : files) {
    if (f.file.empty()) continue;
    std::ifstream in(f.file, std::ios::binary);
    const int error = errno;
    if (!in.is_open()) {
      return reader.Error(f.mark, absl::StrCat(path, ".", f.name),
                          absl::StrCat("cannot read ", QuoteYamlValue(f.file), ": ",
                                       std::strerror(error)));
    }
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    const bool cert_missing = tls.cert_file.empty();
    return reader.Error(cert_missing ? settings.key_file_mark : settings.cert_file_mark,
                        absl::StrCat(path, cert_missing ? ".key_file" : ".cert_file"),
                        cert_missing ? "needs cert_file (the client certificate) too"
                                     : "needs key_file (the client key) too");
  }
  std::string bad_field;
  absl::StatusOr<SslCtxPtr> ctx = NewRedisTlsContext(tls, &bad_field);
  if (!ctx.ok()) {
    const YAML::Mark& mark = bad_field == "key_file"    ? settings.key_file_mark
                             : bad_field == "cert_file" ? settings.cert_file_mark
                             : bad_field == "ca_file"   ? settings.ca_file_mark
                                                        : settings.tls_mark;
    // The message starts with "<field>: ", which the path already says.
    absl::string_view message = ctx.status().message();
    if (!bad_field.empty()) message.remove_prefix(bad_field.size() + 2);
    return reader.Error(mark,
                        bad_field.empty() ? path : absl::StrCat(path, ".", bad_field),
                        std::string(message));
  }
  return absl::OkStatus();
}

absl::Status ParseSettingsMap(const YAML::Node& node, std::string_view path,
                              const YamlReader& reader, RedisSettingsMap& settings) {
  return reader.ForEachEntry(
      node, path,
      {"timeout", "connect_timeout", "pool_size", "username", "password_env", "tls"},
      [&](const std::string& key, const YAML::Node&,
          const YAML::Node& value) -> absl::Status {
        std::string field =
            absl::StrCat(absl::string_view(path.data(), path.size()), ".", key);
        if (key == "tls") {
          settings.tls_mark = value.Mark();
          return ParseTlsMap(value, field, reader, settings);
        }
        if (key == "timeout" || key == "connect_timeout") {
          absl::StatusOr<int64_t> ms =
              reader.GetDuration(value, field, kMinRedisTimeoutMs, kMaxRedisTimeoutMs);
          if (!ms.ok()) return ms.status();
          (key == "timeout" ? settings.timeout_ms : settings.connect_timeout_ms) = *ms;
        } else if (key == "pool_size") {
          absl::StatusOr<uint64_t> n = reader.GetUint(value, field, 1, kMaxRedisPoolSize);
          if (!n.ok()) return n.status();
          settings.pool_size = static_cast<int>(*n);
        } else if (key == "username") {
          absl::StatusOr<std::string> user = reader.GetString(value, field);
          if (!user.ok()) return user.status();
          if (auto c = FindControlCharacter(*user)) {
            return reader.Error(
                value, field,
                absl::StrFormat("username contains control character 0x%02x", *c));
          }
          settings.username = *user;
          settings.username_mark = value.Mark();
        } else {
          absl::StatusOr<std::string> name = reader.GetString(value, field);
          if (!name.ok()) return name.status();
          if (name->empty() ||
              name->find_first_of(std::string_view("=\0", 2)) != std::string::npos) {
            return reader.Error(
                value, field,
                absl::StrCat("expected an environment variable name, got ",
                             QuoteYamlValue(*name)));
          }
          // Read when the settings are parsed (at startup, and again on each
          // reload, so a rotated secret is picked up): the password itself
          // never appears in the file, and a missing variable is a config
          // error, not a runtime one.
          const char* password = std::getenv(name->c_str());
          if (password == nullptr) {
            return reader.Error(value, field,
                                absl::StrCat("environment variable ",
                                             QuoteYamlValue(*name), " is not set"));
          }
          if (*password == '\0') {
            return reader.Error(value, field,
                                absl::StrCat("environment variable ",
                                             QuoteYamlValue(*name), " is empty"));
          }
          settings.password = password;
        }
        return absl::OkStatus();
      });
}

class RedisSettings final : public BackendSettings {
 public:
  explicit RedisSettings(RedisOptions options) : options_(std::move(options)) {}
  std::string Name() const override { return options_.Name(); }
  std::string InstanceKey() const override { return options_.IdentityKey(); }
  const RedisOptions& options() const { return options_; }

 private:
  RedisOptions options_;
};

class Factory final : public BackendFactory {
 public:
  std::vector<std::string> Schemes() const override {
    return {"redis", "redis+cluster", "rediss", "rediss+cluster"};
  }
  std::vector<std::string> Forms() const override {
    return {"redis://...", "redis+cluster://...", "rediss://...", "rediss+cluster://..."};
  }
  std::string SettingsKey() const override { return "redis"; }
  std::string Kind() const override { return "Redis"; }

  absl::StatusOr<std::unique_ptr<BackendSettings>> Parse(
      const BackendSpec& spec, const YamlReader& reader) const override {
    absl::StatusOr<RedisOptions> options = ParseRedisSpec(spec, reader);
    if (!options.ok()) return options.status();
    return std::make_unique<RedisSettings>(*std::move(options));
  }

  absl::StatusOr<std::shared_ptr<Backend>> Create(const BackendSettings& settings,
                                                  const BackendContext&) const override {
    absl::StatusOr<std::unique_ptr<RedisBackend>> redis =
        RedisBackend::Create(static_cast<const RedisSettings&>(settings).options());
    if (!redis.ok()) return redis.status();
    return std::shared_ptr<Backend>(*std::move(redis));
  }
};

}  // namespace

absl::StatusOr<RedisOptions> ParseRedisSpec(const BackendSpec& spec,
                                            const YamlReader& reader) {
  absl::StatusOr<RedisOptions> options =
      ParseRedisUrl(absl::string_view(spec.url.data(), spec.url.size()));
  if (!options.ok()) {
    return reader.Error(spec.url_node, spec.url_path,
                        std::string(options.status().message()));
  }
  if (!spec.has_settings) return options;
  RedisSettingsMap settings;
  // A null settings map is reported at its key.
  reader.set_current_key_mark(spec.settings_key_mark);
  if (absl::Status s =
          ParseSettingsMap(spec.settings, spec.settings_path, reader, settings);
      !s.ok()) {
    return s;
  }
  if (settings.timeout_ms) options->timeout_ms = *settings.timeout_ms;
  if (settings.connect_timeout_ms) {
    options->connect_timeout_ms = *settings.connect_timeout_ms;
  }
  if (settings.pool_size) options->pool_size = *settings.pool_size;
  if (settings.username) options->username = *settings.username;
  if (settings.password) options->password = *settings.password;
  if (settings.tls) {
    const std::string tls_path = absl::StrCat(spec.settings_path, ".tls");
    if (!options->tls) {
      return reader.Error(
          settings.tls_mark, tls_path,
          "TLS settings need a rediss:// or rediss+cluster:// backend URL");
    }
    if (absl::Status s = CheckTlsFiles(settings, tls_path, reader); !s.ok()) return s;
    options->tls_options = *settings.tls;
  }
  if (settings.username && !options->username.empty() && options->password.empty()) {
    return reader.Error(settings.username_mark,
                        absl::StrCat(spec.settings_path, ".username"),
                        "a username needs a password (in the backend URL or via "
                        "password_env)");
  }
  return options;
}

std::shared_ptr<const BackendFactory> RedisBackendFactory() {
  return std::make_shared<Factory>();
}

}  // namespace traffik
