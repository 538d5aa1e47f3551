#include "engine/key.h"

namespace traffik {

void BuildBucketKey(absl::string_view prefix, absl::string_view uid,
                    absl::string_view identifier, std::string* out) {
  out->clear();
  out->reserve(prefix.size() + uid.size() + identifier.size() + 4);
  out->append(prefix.data(), prefix.size());
  out->push_back(':');
  out->append(uid.data(), uid.size());
  out->append(":{");
  out->append(identifier.data(), identifier.size());
  out->push_back('}');
}

}  // namespace traffik
