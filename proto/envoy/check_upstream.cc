// Compares our Envoy-compatible protos with upstream's (see
// check_upstream.sh): every message, field and enum value we declare must
// exist upstream under the same full name with the same number, type, label
// and type name. Prints each checked item; exits 1 on any difference.
#include <fstream>
#include <iostream>
#include <string>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::EnumDescriptor;
using google::protobuf::FileDescriptorSet;

namespace {
int failures = 0;
int checked = 0;

bool Load(const char* path, DescriptorPool* pool) {
  std::ifstream in(path, std::ios::binary);
  FileDescriptorSet set;
  if (!set.ParseFromIstream(&in)) return false;
  for (const auto& file : set.file()) {
    if (pool->BuildFile(file) == nullptr) return false;
  }
  return true;
}

void Fail(const std::string& what) {
  std::cout << "MISMATCH " << what << "\n";
  ++failures;
}

void CheckEnum(const EnumDescriptor* ours, const DescriptorPool& up) {
  const EnumDescriptor* theirs = up.FindEnumTypeByName(ours->full_name());
  if (theirs == nullptr) return Fail("enum " + ours->full_name() + " missing upstream");
  for (int i = 0; i < ours->value_count(); ++i) {
    const auto* v = ours->value(i);
    const auto* u = theirs->FindValueByName(v->name());
    ++checked;
    if (u == nullptr || u->number() != v->number()) {
      Fail(v->full_name() + " = " + std::to_string(v->number()));
    } else {
      std::cout << "ok " << v->full_name() << " = " << v->number() << "\n";
    }
  }
}

void CheckMessage(const Descriptor* ours, const DescriptorPool& up) {
  const Descriptor* theirs = up.FindMessageTypeByName(ours->full_name());
  if (theirs == nullptr)
    return Fail("message " + ours->full_name() + " missing upstream");
  for (int i = 0; i < ours->field_count(); ++i) {
    const auto* f = ours->field(i);
    const auto* u = theirs->FindFieldByName(f->name());
    ++checked;
    auto type_name = [](const google::protobuf::FieldDescriptor* d) {
      if (d->message_type() != nullptr) return d->message_type()->full_name();
      if (d->enum_type() != nullptr) return d->enum_type()->full_name();
      return std::string(d->type_name());
    };
    if (u == nullptr || u->number() != f->number() || u->type() != f->type() ||
        u->label() != f->label() || type_name(u) != type_name(f) ||
        (u->containing_oneof() == nullptr) != (f->containing_oneof() == nullptr)) {
      Fail(f->full_name() + " = " + std::to_string(f->number()) + " " + type_name(f));
    } else {
      std::cout << "ok " << f->full_name() << " = " << f->number() << " ("
                << (f->is_repeated() ? "repeated " : "") << type_name(f) << ")\n";
    }
  }
  for (int i = 0; i < ours->nested_type_count(); ++i)
    CheckMessage(ours->nested_type(i), up);
  for (int i = 0; i < ours->enum_type_count(); ++i) CheckEnum(ours->enum_type(i), up);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: check_upstream OURS.pb UPSTREAM.pb\n";
    return 2;
  }
  DescriptorPool ours, up;
  if (!Load(argv[1], &ours) || !Load(argv[2], &up)) {
    std::cerr << "cannot load descriptor sets\n";
    return 2;
  }
  for (const char* file :
       {"envoy/service/ratelimit/v3/rls.proto",
        "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        "envoy/config/core/v3/base.proto", "envoy/type/v3/ratelimit_unit.proto"}) {
    const auto* fd = ours.FindFileByName(file);
    if (fd == nullptr) {
      Fail(std::string("file ") + file);
      continue;
    }
    if (up.FindFileByName(file) == nullptr) Fail(std::string("upstream file ") + file);
    for (int i = 0; i < fd->message_type_count(); ++i)
      CheckMessage(fd->message_type(i), up);
    for (int i = 0; i < fd->enum_type_count(); ++i) CheckEnum(fd->enum_type(i), up);
    for (int i = 0; i < fd->service_count(); ++i) {
      const auto* s = fd->service(i);
      const auto* us = up.FindServiceByName(s->full_name());
      for (int m = 0; m < s->method_count(); ++m) {
        const auto* method = s->method(m);
        const auto* um = us == nullptr ? nullptr : us->FindMethodByName(method->name());
        ++checked;
        if (um == nullptr ||
            um->input_type()->full_name() != method->input_type()->full_name() ||
            um->output_type()->full_name() != method->output_type()->full_name()) {
          Fail("rpc " + method->full_name());
        } else {
          std::cout << "ok rpc " << method->full_name() << "\n";
        }
      }
    }
  }
  std::cout << checked << " items checked, " << failures << " mismatches\n";
  return failures == 0 ? 0 : 1;
}
