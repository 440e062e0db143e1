#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "quant/quant.h"

namespace ll::apps {

namespace {

nlohmann::json value_to_json(const gguf::Value& v, size_t max_items) {
  using gguf::ValueType;
  if (const auto* s = v.as_string()) return *s;
  if (const auto* a = v.as_array()) {
    nlohmann::json arr = nlohmann::json::array();
    for (size_t i = 0; i < a->items.size() && i < max_items; ++i) arr.push_back(value_to_json(a->items[i], max_items));
    if (a->items.size() > max_items) arr.push_back("... " + std::to_string(a->items.size()) + " items");
    return arr;
  }
  if (v.type() == ValueType::boolean) return std::get<bool>(v.v);
  if (v.type() == ValueType::f32 || v.type() == ValueType::f64) {
    double d = 0;
    v.as_f64(d);
    return d;
  }
  int64_t i = 0;
  if (v.as_i64(i)) return i;
  uint64_t u = 0;
  v.as_u64(u);
  return u;
}

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

}  // namespace

Runner add_inspect_command(CLI::App& app) {
  struct Opts {
    std::string path, tensor;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("model", o->path, "GGUF file")->required();
  app.add_option("--tensor", o->tensor, "Dequantize this tensor to F32 and print its figures");
  app.add_flag("--json", o->json, "Machine-readable output (one JSON line)");
  return [o]() -> int {
    auto file = gguf::File::open(o->path);
    if (!file) return report_error(file.error());
    if (!o->tensor.empty()) {
      const gguf::TensorInfo* t = file->find_tensor(o->tensor);
      if (t == nullptr) {
        return report_error(make_error(ErrorCode::not_found, o->path + ": no tensor named '" + o->tensor + "'"));
      }
      std::vector<float> row(static_cast<size_t>(t->row_elems()));
      const size_t row_bytes = *dtype_row_bytes(t->type, t->row_elems());
      double sum = 0, sumsq = 0;
      std::vector<double> first8;
      for (uint64_t r = 0; r < t->n_rows(); ++r) {
        quant::dequantize_row(t->type, t->data + r * row_bytes, row.data(), static_cast<int64_t>(row.size()));
        for (float x : row) {
          if (first8.size() < 8) first8.push_back(x);
          sum += x;
          sumsq += static_cast<double>(x) * x;
        }
      }
      nlohmann::json j;
      j["name"] = t->name;
      j["type"] = std::string(dtype_name(t->type));
      j["shape"] = t->shape;
      j["first8"] = first8;
      j["sum"] = sum;
      j["sumsq"] = sumsq;
      if (o->json) {
        std::printf("%s\n", dump(j).c_str());
      } else {
        std::printf("%s  %s  shape %s  n=%llu\nfirst8: %s\nsum %.9g  sumsq %.9g\n", t->name.c_str(),
                    std::string(dtype_name(t->type)).c_str(), dump(j["shape"]).c_str(),
                    static_cast<unsigned long long>(t->n_elements), dump(j["first8"]).c_str(), sum, sumsq);
      }
      return 0;
    }
    // Units need a model we can run; for other GGUF files (e.g. vocabularies) they are left out.
    const gguf::File& f = *file;
    auto model = model::Model::load(o->path);  // a second, cheap mapping
    nlohmann::json j;
    j["path"] = o->path;
    j["version"] = f.version();
    j["alignment"] = f.alignment();
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : f.metadata()) meta[k] = value_to_json(v, o->json ? 1u << 30 : 8);
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : f.tensors()) {
      tensors.push_back({{"name", t.name}, {"type", std::string(dtype_name(t.type))}, {"shape", t.shape},
                         {"bytes", t.n_bytes}, {"offset", t.offset}});
    }
    nlohmann::json units = nlohmann::json::array();
    if (model) {
      for (int64_t u = 0; u < (*model)->n_units(); ++u) {
        units.push_back({{"unit", u}, {"name", (*model)->unit_name(u)}, {"weight_bytes", (*model)->unit_weight_bytes(u)}});
      }
    }
    if (o->json) {
      j["metadata"] = meta;
      j["tensors"] = tensors;
      j["units"] = units;
      std::printf("%s\n", dump(j).c_str());
      return 0;
    }
    std::printf("%s: GGUF v%u, %zu metadata keys, %zu tensors, alignment %llu\n\nmetadata:\n", o->path.c_str(),
                f.version(), f.metadata().size(), f.tensors().size(), static_cast<unsigned long long>(f.alignment()));
    for (const auto& [k, v] : meta.items()) std::printf("  %-44s %s\n", k.c_str(), dump(v).c_str());
    std::printf("\ntensors:\n");
    for (const auto& t : tensors) {
      std::printf("  %-32s %-5s %-18s %12llu bytes\n", t["name"].get<std::string>().c_str(),
                  t["type"].get<std::string>().c_str(), dump(t["shape"]).c_str(),
                  static_cast<unsigned long long>(t["bytes"].get<uint64_t>()));
    }
    if (model) {
      std::printf("\nunits (0 = embedding, 1..%lld = blocks, %lld = norm + output head):\n",
                  static_cast<long long>((*model)->hparams().n_layer), static_cast<long long>((*model)->n_units() - 1));
      for (const auto& u : units) {
        std::printf("  %3lld %-8s %12llu bytes\n", static_cast<long long>(u["unit"].get<int64_t>()),
                    u["name"].get<std::string>().c_str(), static_cast<unsigned long long>(u["weight_bytes"].get<uint64_t>()));
      }
    } else {
      std::printf("\n(no units: %s)\n", model.error().message.c_str());
    }
    return 0;
  };
}

}  // namespace ll::apps
