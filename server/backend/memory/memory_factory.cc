#include "backend/memory/memory_factory.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "backend/memory/memory_backend.h"
#include "metrics/metrics.h"

namespace traffik {
namespace {

constexpr char kName[] = "memory";

class MemorySettings final : public BackendSettings {
 public:
  std::string Name() const override { return kName; }
  // One in-process store per server, whatever the tenant.
  std::string InstanceKey() const override { return kName; }
};

class Factory final : public BackendFactory {
 public:
  std::vector<std::string> Schemes() const override { return {kName}; }
  std::vector<std::string> Forms() const override { return {kName}; }
  std::string Kind() const override { return kName; }

  absl::StatusOr<std::unique_ptr<BackendSettings>> Parse(
      const BackendSpec&, const YamlReader&) const override {
    return std::make_unique<MemorySettings>();
  }

  absl::StatusOr<std::shared_ptr<Backend>> Create(
      const BackendSettings&, const BackendContext& context) const override {
    MemoryBackendOptions options;
    options.max_bytes = context.in_process.max_bytes;
    options.max_buckets = context.in_process.max_buckets;
    options.sweep_interval_ms = context.in_process.sweep_interval_ms;
    auto memory = std::make_shared<MemoryBackend>(*context.clock, options);
    if (context.metrics != nullptr) {
      // Weak: a reload may retire this backend (no memory tenant left) while
      // the metrics live on.
      std::weak_ptr<MemoryBackend> weak = memory;
      context.metrics->AddBucketSource(
          kName,
          [weak]() -> uint64_t {
            std::shared_ptr<MemoryBackend> m = weak.lock();
            return m != nullptr ? m->bucket_count() : 0;
          },
          [weak]() -> uint64_t {
            std::shared_ptr<MemoryBackend> m = weak.lock();
            return m != nullptr ? m->evictions() : 0;
          });
    }
    return std::shared_ptr<Backend>(std::move(memory));
  }

  BackendPartition* Attach(const std::shared_ptr<Backend>& backend,
                           const std::string& tenant, const TenantShare& share,
                           const BackendContext& context) const override {
    auto& memory = static_cast<MemoryBackend&>(*backend);
    const MemoryShare memory_share{share.max_bytes, share.max_buckets};
    MemoryBackend::Partition* partition = memory.FindPartition(tenant);
    if (partition != nullptr) {
      MemoryBackend::SetShare(partition, memory_share);
      return partition;
    }
    partition = memory.AddPartition(tenant, memory_share);
    if (context.metrics != nullptr) {
      // The partition lives as long as its backend (see RemovePartition).
      std::weak_ptr<MemoryBackend> weak =
          std::static_pointer_cast<MemoryBackend>(backend);
      context.metrics->AddRejectionSource(kName, tenant, [weak, partition]() -> uint64_t {
        std::shared_ptr<MemoryBackend> m = weak.lock();
        return m != nullptr ? partition->rejections() : 0;
      });
    }
    return partition;
  }

  void Detach(Backend& backend, const std::string& tenant) const override {
    auto& memory = static_cast<MemoryBackend&>(backend);
    if (MemoryBackend::Partition* p = memory.FindPartition(tenant)) {
      memory.RemovePartition(p);
    }
  }

  // A bucket that has refilled completely is the same as a new one; dropping
  // those now makes them full under the new limits (as expired Redis keys
  // are), so a reload treats every full bucket alike.
  void OnReload(Backend& backend) const override {
    static_cast<MemoryBackend&>(backend).SweepExpired();
  }
};

}  // namespace

std::shared_ptr<const BackendFactory> MemoryBackendFactory() {
  return std::make_shared<Factory>();
}

}  // namespace traffik
