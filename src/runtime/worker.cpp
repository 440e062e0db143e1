#include "runtime/worker.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/sampler.h"
#include "net/channel.h"
#include "plan/profile.h"
#include "runtime/model_source.h"
#include "runtime/sysinfo.h"

namespace ll::runtime {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t k_mib = uint64_t{1} << 20;
// Working memory besides weights and KV cache: activations, message buffers, the runtime itself.
constexpr uint64_t k_reserve_bytes = 48 * k_mib;
constexpr uint64_t k_huge_page = 2 * k_mib;
// Sequences a worker holds at once (each has a KV cache and maybe a sampler), whatever the memory.
constexpr size_t k_max_sequences = 4096;

struct AlignedFree {
  void operator()(uint8_t* p) const noexcept { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

// One tensor of the segment: where its bytes are and how far they have arrived.
struct TensorSlot {
  net::TensorDesc desc;
  AlignedBuffer buffer;    // received over the wire, or read from the cache directory
  const uint8_t* data = nullptr;  // the bytes once complete and verified
  uint64_t received = 0;
  bool spare = false;     // of a unit next to the segment (LoadSegment::n_spare), not part of it
  bool accepted = false;  // a spare held, or on its way (counted in spare_bytes)
};

// A tensor's buffer: large tensors on 2 MiB boundaries in transparent huge pages — decoding
// streams every weight once per token, and 4 KiB pages would cost a TLB miss every 4 KiB (heap
// memory gets huge pages only when asked). The tail past the last whole huge page is rounded up to
// one more when it is over half of one (at most 1 MiB more), else left in small pages (at most
// 1 MiB of them): rounding every tensor up cost ~70 MiB over a 7B Q4_0 worker's segment and spares,
// whose FFN matrices (24.2 MiB) end 0.2 MiB into a huge page. tensor_resident_bytes() says what a
// buffer occupies, which is what --memory-limit counts. Null when out of memory.
uint64_t huge_pages_of(uint64_t n_bytes) {
  if (n_bytes < k_huge_page) return 0;
  const uint64_t whole = n_bytes / k_huge_page;
  return n_bytes % k_huge_page > k_huge_page / 2 ? whole + 1 : whole;
}

AlignedBuffer allocate_tensor_buffer(uint64_t n_bytes) {
  const uint64_t huge = huge_pages_of(n_bytes) * k_huge_page;
  const uint64_t align = huge > 0 ? k_huge_page : 64;
  const uint64_t size = std::max<uint64_t>({64, (n_bytes + 63) / 64 * 64, huge});
  AlignedBuffer b(static_cast<uint8_t*>(std::aligned_alloc(static_cast<size_t>(align), static_cast<size_t>(size))));
  if (b && huge > 0) (void)::madvise(b.get(), static_cast<size_t>(huge), MADV_HUGEPAGE);
  return b;
}

// Reads a whole file of exactly n_bytes into a tensor buffer; nullopt when it cannot (missing,
// other size, I/O error): the caller fetches the tensor instead.
std::optional<AlignedBuffer> read_tensor_file(const std::string& path, uint64_t n_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  AlignedBuffer b;
  if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) == n_bytes) b = allocate_tensor_buffer(n_bytes);
  uint64_t done = 0;
  while (b && done < n_bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(n_bytes - done, uint64_t{64} << 20));
    const ssize_t got = ::pread(fd, b.get() + done, want, static_cast<off_t>(done));
    if (got <= 0) break;
    done += static_cast<uint64_t>(got);
  }
  ::close(fd);
  if (!b || done != n_bytes) return std::nullopt;
  return b;
}

std::string hex_short(const net::Sha256Digest& d) { return net::to_hex(d).substr(0, 16); }

std::string mib(uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / static_cast<double>(k_mib));
  return buf;
}

}  // namespace

struct Worker::Impl {
  WorkerOptions opt;
  net::Network* net = nullptr;
  std::unique_ptr<net::Listener> listener;
  std::unique_ptr<net::ServerChannel> server;
  std::unique_ptr<ThreadPool> pool;
  Clock::time_point started = Clock::now();
  WorkerCounters counters;

  // --model: the local copy and its identity.
  std::unique_ptr<gguf::File> local_file;
  net::Sha256Digest local_identity{};
  std::set<std::pair<std::string, net::Sha256Digest>> verified_local;  // its tensors already hashed

  // The segment.
  bool have_segment = false;
  net::PeerId coordinator;
  uint64_t load_request_id = 0;
  net::LoadSegment segment;       // as received, minus the metadata bytes once parsed
  std::vector<TensorSlot> tensors;  // the segment's, then the spares
  size_t n_segment_tensors = 0;
  std::set<uint32_t> missing;       // segment tensors and accepted spares not yet received
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::UnitRunner> runner;
  uint64_t weight_bytes = 0;  // the segment's tensors
  uint64_t spare_bytes = 0;   // accepted spares (held or on their way)
  uint64_t kv_bytes_per_sequence = 0;
  uint64_t baseline_rss = 0;
  std::set<int32_t> sequences;
  std::map<int32_t, model::Sampler> samplers;

  // The next stage, when the segment forwards its output.
  std::unique_ptr<net::Link> next_link;
  std::unique_ptr<net::Channel> next;

  std::vector<model::BatchToken> batch;
  std::vector<float> out;

  // ------------------------------------------------------------------------------------ helpers
  net::Hello hello() const {
    net::Hello h;
    h.role = net::Role::worker;
    h.name = opt.name;
    h.n_threads = static_cast<uint32_t>(opt.n_threads);
    h.free_memory_bytes = available_memory_bytes();
    h.memory_limit_bytes = opt.memory_limit_bytes;
    h.cpu_features = cpu_features().describe();
    return h;
  }

  void reply_error(const net::PeerId& peer, uint64_t request_id, net::MessageType in_reply_to, const Error& e) {
    ++counters.n_bad_messages;
    std::fprintf(stderr, "lingua worker %s: %s: %s\n", opt.name.c_str(), net::message_type_name(in_reply_to).c_str(),
                 e.message.c_str());
    (void)server->send(peer, net::make_error_message(e, static_cast<uint16_t>(in_reply_to), opt.limits), request_id);
  }

  void drop_segment() {
    runner.reset();
    model.reset();
    tensors.clear();
    missing.clear();
    sequences.clear();
    samplers.clear();
    next.reset();
    next_link.reset();
    have_segment = false;
    weight_bytes = 0;
    spare_bytes = 0;
    n_segment_tensors = 0;
    // The pages of a local --model copy that the old segment used are held in memory, and would
    // count in the resident memory the next segment is checked against: give them back (the file
    // stays in the page cache, so a segment that uses them again holds them again from memory).
    if (local_file) {
      for (const auto& t : local_file->tensors()) {
        (void)local_file->release_memory(local_file->data_offset() + t.offset, t.n_bytes);
      }
    }
  }

  std::string cache_path(const net::Sha256Digest& d) const { return opt.cache_dir + "/" + net::to_hex(d) + ".tensor"; }

  // ------------------------------------------------------------------------------ LOAD_SEGMENT
  // Without --memory-limit the budget is what the system could give when the segment arrived, so a
  // peer can never make the worker allocate (or reserve) more than exists.
  uint64_t budget = 0;
  Expected<void> check_limit(uint64_t need, const std::string& what) const {
    if (need <= budget) return {};
    if (opt.memory_limit_bytes > 0) {
      return make_error(ErrorCode::resource, what + " needs " + mib(need) + " but this worker's --memory-limit is " +
                                                 mib(opt.memory_limit_bytes));
    }
    return make_error(ErrorCode::resource, what + " needs " + mib(need) + " but this device has " + mib(budget) +
                                               " available");
  }

  Expected<net::SegmentStatus> load_segment(const net::PeerId& peer, uint64_t request_id, net::LoadSegment msg) {
    // Tensors of the old segment that the new one uses again are kept (by content hash), so a
    // re-plan that shifts a boundary by a few units sends only the units new to this worker.
    std::map<net::Sha256Digest, TensorSlot> reusable;
    uint64_t reused_bytes = 0;
    if (!local_file) {
      std::set<net::Sha256Digest> wanted;
      for (const auto& t : msg.tensors) wanted.insert(t.sha256);
      for (auto& s : tensors) {
        if (s.data == nullptr || !wanted.count(s.desc.sha256)) continue;
        reused_bytes += tensor_resident_bytes(s.desc.n_bytes);
        reusable.emplace(s.desc.sha256, std::move(s));
      }
    }
    drop_segment();
    // CURVE: from now on the previous stage (and no earlier one) may connect and forward to us.
    if (opt.authorized_keys) {
      std::vector<std::string> upstream;
      if (!msg.upstream_public_key.empty()) upstream.push_back(msg.upstream_public_key);
      opt.authorized_keys->set_delegated(std::move(upstream));
    }
    if (msg.unit_first == 0) {
      return make_error(ErrorCode::invalid_argument,
                        "unit 0 (the token embedding) stays on the origin: token ids never leave it");
    }
    if (msg.unit_last < msg.unit_first) return make_error(ErrorCode::invalid_argument, "empty unit range");
    // Hyper-parameters first: they say whether the units exist and what the KV cache costs.
    LL_ASSIGN_OR_RETURN(gguf::File meta, gguf::File::from_bytes(msg.metadata, "segment metadata"));
    // Sizes come from the peer: sum them without overflow (each is checked against its shape later).
    const size_t n_segment = msg.tensors.size() - std::min<size_t>(msg.n_spare, msg.tensors.size());
    weight_bytes = 0;
    for (size_t i = 0; i < n_segment; ++i) {
      weight_bytes = plan::add_sat(weight_bytes, tensor_resident_bytes(msg.tensors[i].n_bytes));
    }
    // The hyper-parameters that size the KV cache (the model view built later validates them all).
    auto arch = meta.get_string("general.architecture");
    if (!arch) return make_error(ErrorCode::invalid_argument, "segment metadata has no general.architecture");
    const std::string a = *arch + ".";
    auto n_layer = meta.get_u64(a + "block_count");
    auto n_embd = meta.get_u64(a + "embedding_length");
    auto n_head = meta.get_u64(a + "attention.head_count");
    if (!n_layer || !n_embd || !n_head || *n_head == 0 || *n_layer == 0 || *n_layer > 4096) {
      return make_error(ErrorCode::invalid_argument, "segment metadata lacks valid block_count / embedding_length / "
                                                     "attention.head_count");
    }
    const uint64_t n_units = *n_layer + 2;
    if (msg.unit_last >= n_units) {
      return make_error(ErrorCode::invalid_argument, "units " + std::to_string(msg.unit_first) + "-" +
                                                         std::to_string(msg.unit_last) + " are outside the model's " +
                                                         std::to_string(n_units) + " units");
    }
    uint64_t n_head_kv = *n_head;
    if (auto v = meta.get_u64(a + "attention.head_count_kv")) n_head_kv = *v;
    uint64_t head_dim = *n_embd / *n_head;
    if (auto v = meta.get_u64(a + "attention.key_length")) head_dim = *v;
    if (n_head_kv == 0 || n_head_kv > 4096 || head_dim == 0 || head_dim > 4096 || *n_embd > (1u << 24)) {
      return make_error(ErrorCode::invalid_argument, "segment metadata has implausible attention sizes");
    }
    const uint64_t first_block = std::max<uint64_t>(msg.unit_first, 1);
    const uint64_t last_block = std::min<uint64_t>(msg.unit_last, *n_layer);
    const uint64_t n_blocks = last_block >= first_block ? last_block - first_block + 1 : 0;
    // K and V, F16, full context.
    kv_bytes_per_sequence = n_blocks * msg.n_ctx * n_head_kv * head_dim * 2 * 2;
    // (The kept tensors are resident already and count in weight_bytes.)
    baseline_rss = current_rss_bytes();
    baseline_rss -= std::min(baseline_rss, reused_bytes);
    budget = opt.memory_limit_bytes > 0 ? opt.memory_limit_bytes : plan::add_sat(available_memory_bytes(), baseline_rss);
    if (budget == 0) budget = UINT64_MAX;  // unknown (no /proc/meminfo): trust the peer
    LL_TRY(check_limit(baseline_rss + weight_bytes + kv_bytes_per_sequence + k_reserve_bytes,
                       "units " + std::to_string(msg.unit_first) + "-" + std::to_string(msg.unit_last) + " (weights " +
                           mib(weight_bytes) + ", KV cache " + mib(kv_bytes_per_sequence) + " per sequence of " +
                           std::to_string(msg.n_ctx) + " tokens)"));

    if (local_file) {
      if (msg.model_hash != local_identity) {
        return make_error(ErrorCode::not_found, "the coordinator runs model " + hex_short(msg.model_hash) +
                                                    "..., but this worker's --model " + local_file->path() + " is " +
                                                    hex_short(local_identity) + "...: not the same model");
      }
    }
    if (!opt.cache_dir.empty()) ::mkdir(opt.cache_dir.c_str(), 0755);  // best effort; errors show on write

    tensors.resize(msg.tensors.size());
    n_segment_tensors = n_segment;
    // Spares are taken a unit at a time, nearest first, as many as fit beside the segment and one
    // full-context sequence, up to the first unit that does not (a local copy holds every unit:
    // nothing to keep). A unit's tensors are those of one "blk.N." prefix; the rest form one more.
    std::vector<uint32_t> declined;
    std::vector<bool> take(msg.tensors.size(), false);
    if (!local_file) {
      auto unit_key = [](const std::string& name) {
        if (name.rfind("blk.", 0) != 0) return std::string("(head)");
        return name.substr(0, name.find('.', 4));
      };
      bool stop = false;
      for (size_t i = n_segment; i < msg.tensors.size();) {
        const std::string key = unit_key(msg.tensors[i].name);
        size_t j = i;
        uint64_t bytes = 0;
        while (j < msg.tensors.size() && unit_key(msg.tensors[j].name) == key) {
          bytes = plan::add_sat(bytes, tensor_resident_bytes(msg.tensors[j++].n_bytes));
        }
        const uint64_t need = plan::add_sat(baseline_rss + weight_bytes + kv_bytes_per_sequence + k_reserve_bytes,
                                            plan::add_sat(spare_bytes, bytes));
        stop = stop || need > budget;
        for (size_t k = i; k < j; ++k) {
          if (stop) {
            declined.push_back(static_cast<uint32_t>(k));
          } else {
            take[k] = true;
          }
        }
        if (!stop) spare_bytes += bytes;
        i = j;
      }
    }
    for (size_t i = 0; i < msg.tensors.size(); ++i) {
      TensorSlot& s = tensors[i];
      s.desc = msg.tensors[i];
      s.spare = i >= n_segment;
      if (s.spare) {
        if (!take[i]) continue;
        s.accepted = true;
      }
      if (local_file) {
        const gguf::TensorInfo* t = local_file->find_tensor(s.desc.name);
        if (t == nullptr || t->type != s.desc.dtype || t->shape != s.desc.shape || t->n_bytes != s.desc.n_bytes) {
          return make_error(ErrorCode::invalid_argument, "tensor '" + s.desc.name +
                                                             "' does not match this worker's --model file");
        }
        auto key = std::make_pair(s.desc.name, s.desc.sha256);
        if (!verified_local.count(key)) {  // (hashed once: a re-plan loads many of them again)
          if (net::sha256(std::span<const uint8_t>(t->data, t->n_bytes)) != s.desc.sha256) {
            return make_error(ErrorCode::invalid_argument, "tensor '" + s.desc.name + "' of --model " +
                                                               local_file->path() + " has other content (SHA-256 differs)");
          }
          verified_local.insert(std::move(key));
        }
        // In memory, in huge pages, at the same address (gguf::File::hold_in_memory); mapped from
        // the file as before if the kernel refuses.
        if (auto held = local_file->hold_in_memory(local_file->data_offset() + t->offset, t->n_bytes); !held) {
          std::fprintf(stderr, "lingua worker %s: %s\n", opt.name.c_str(), held.error().message.c_str());
        }
        s.data = t->data;
        s.received = t->n_bytes;
        continue;
      }
      if (auto it = reusable.find(s.desc.sha256); it != reusable.end() && it->second.desc.n_bytes == s.desc.n_bytes) {
        TensorSlot& old = it->second;
        s.buffer = std::move(old.buffer);
        s.data = old.data;
        s.received = s.desc.n_bytes;
        reusable.erase(it);
        ++counters.n_tensors_kept;
        continue;
      }
      if (!opt.cache_dir.empty()) {
        // Read, not mapped: the page cache may hold the file in small pages (see allocate_tensor_buffer).
        auto buf = read_tensor_file(cache_path(s.desc.sha256), s.desc.n_bytes);
        if (buf && net::sha256(std::span<const uint8_t>(buf->get(), s.desc.n_bytes)) == s.desc.sha256) {
          s.buffer = std::move(*buf);
          s.data = s.buffer.get();
          s.received = s.desc.n_bytes;
          ++counters.n_tensors_from_cache;
          continue;
        }
      }
      missing.insert(static_cast<uint32_t>(i));
    }
    msg.metadata.clear();
    msg.metadata.shrink_to_fit();
    segment = std::move(msg);
    segment_metadata = std::move(meta);
    coordinator = peer;
    load_request_id = request_id;
    have_segment = true;
    net::SegmentStatus st;
    if (!segment_missing()) {
      LL_TRY(build());
      st.state = net::SegmentState::ready;
    } else {
      st.state = net::SegmentState::need_tensors;
    }
    st.missing.assign(missing.begin(), missing.end());
    st.declined = std::move(declined);
    return st;
  }

  std::optional<gguf::File> segment_metadata;

  bool segment_missing() const { return !missing.empty() && *missing.begin() < n_segment_tensors; }

  // Gives up spares, farthest first, until `need` bytes fit the budget (a sequence wants the room).
  void evict_spares_for(uint64_t need) {
    for (size_t i = tensors.size(); i-- > n_segment_tensors && plan::add_sat(need, spare_bytes) > budget;) {
      TensorSlot& s = tensors[i];
      if (!s.accepted) continue;
      s.buffer.reset();
      s.data = nullptr;
      s.received = 0;
      s.accepted = false;
      missing.erase(static_cast<uint32_t>(i));
      spare_bytes -= tensor_resident_bytes(s.desc.n_bytes);
    }
  }

  // Every tensor is present: build the model view, the runner, and the link to the next stage.
  Expected<void> build() {
    std::vector<model::ExternalTensor> ext;
    for (const TensorSlot& s : tensors) {
      if (s.spare) continue;
      ext.push_back(model::ExternalTensor{s.desc.name, s.desc.dtype, s.desc.shape, s.data, s.desc.n_bytes});
    }
    LL_ASSIGN_OR_RETURN(model, model::Model::from_parts(std::move(*segment_metadata), std::move(ext),
                                                        segment.unit_first, segment.unit_last));
    segment_metadata.reset();
    LL_ASSIGN_OR_RETURN(runner, model::UnitRunner::create(*model, segment.unit_first, segment.unit_last, *pool,
                                                          segment.n_ctx));
    if (opt.unit_hook) runner->set_unit_hook(opt.unit_hook);
    if (!segment.next_endpoint.empty()) {
      // Over CURVE the next stage accepts us once its own LOAD_SEGMENT (naming us as its upstream)
      // has arrived, which may be after ours when we had every tensor already: a refused handshake
      // is retried on a fresh link until the deadline.
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      for (;;) {
        LL_ASSIGN_OR_RETURN(next_link, net->connect(segment.next_endpoint, segment.next_public_key));
        next = std::make_unique<net::Channel>(*next_link, opt.limits);
        const auto left = std::chrono::duration_cast<net::Millis>(deadline - Clock::now());
        auto h = next->handshake(hello(), net::Role::worker, std::max(left, net::Millis(1)));
        if (h) break;
        next.reset();
        const bool refused = next_link->security_failure().has_value();
        next_link.reset();
        if (!refused || Clock::now() + std::chrono::milliseconds(200) >= deadline) {
          return make_error(h.error().code, "cannot reach the next stage at " + segment.next_endpoint + ": " +
                                                h.error().message);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    if (!opt.quiet) std::fprintf(stderr, "lingua worker %s: ready: units %u-%u, %s of weights, %zu tensors, %s of spares (%llu received, %llu from cache, %llu kept from the last segment)\n",
                 opt.name.c_str(), segment.unit_first, segment.unit_last, mib(weight_bytes).c_str(), n_segment_tensors,
                 mib(spare_bytes).c_str(),
                 static_cast<unsigned long long>(counters.n_tensors_received),
                 static_cast<unsigned long long>(counters.n_tensors_from_cache),
                 static_cast<unsigned long long>(counters.n_tensors_kept));
    return {};
  }

  // ------------------------------------------------------------------------------ TENSOR_CHUNK
  // Returns true when this chunk completed the segment (not a spare: the segment runs without them).
  Expected<bool> tensor_chunk(const net::PeerId& peer, net::TensorChunk& c) {
    if (!have_segment || !(peer == coordinator)) {
      return make_error(ErrorCode::invalid_argument, "TENSOR_CHUNK without a LOAD_SEGMENT from this peer");
    }
    if (c.tensor_index >= tensors.size()) {
      return make_error(ErrorCode::out_of_range, "tensor index " + std::to_string(c.tensor_index) + " >= " +
                                                     std::to_string(tensors.size()) + " tensors of the segment");
    }
    TensorSlot& s = tensors[c.tensor_index];
    if (missing.count(c.tensor_index) == 0) {
      return make_error(ErrorCode::invalid_argument, "tensor '" + s.desc.name + "' is not missing" +
                                                         (s.spare && !s.accepted ? " (a spare given up for room)" : ""));
    }
    if (c.total_bytes != s.desc.n_bytes) {
      return make_error(ErrorCode::invalid_argument, "chunk of '" + s.desc.name + "' says the tensor has " +
                                                         std::to_string(c.total_bytes) + " bytes, LOAD_SEGMENT said " +
                                                         std::to_string(s.desc.n_bytes));
    }
    if (c.offset != s.received) {
      return make_error(ErrorCode::invalid_argument, "chunk of '" + s.desc.name + "' at offset " +
                                                         std::to_string(c.offset) + ", expected " +
                                                         std::to_string(s.received) + " (chunks come in order)");
    }
    if (!s.buffer) {
      s.buffer = allocate_tensor_buffer(s.desc.n_bytes);
      if (!s.buffer) return make_error(ErrorCode::resource, "out of memory for tensor '" + s.desc.name + "'");
    }
    std::memcpy(s.buffer.get() + c.offset, c.data.data(), c.data.size());
    s.received += c.data.size();
    if (s.received < s.desc.n_bytes) return false;
    if (net::sha256(std::span<const uint8_t>(s.buffer.get(), s.desc.n_bytes)) != s.desc.sha256) {
      s.received = 0;  // the coordinator may send it again
      return make_error(ErrorCode::invalid_argument, "tensor '" + s.desc.name +
                                                         "' arrived with other content than its SHA-256 says");
    }
    s.data = s.buffer.get();
    ++counters.n_tensors_received;
    missing.erase(c.tensor_index);
    if (!opt.cache_dir.empty()) {
      auto w = write_file_atomic(cache_path(s.desc.sha256), s.data, s.desc.n_bytes);
      if (!w) std::fprintf(stderr, "lingua worker %s: cache: %s\n", opt.name.c_str(), w.error().message.c_str());
    }
    if (s.spare || runner || segment_missing()) return false;
    LL_TRY(build());
    return true;
  }

  // ------------------------------------------------------------------------- KV cache moves
  // KV_REQUEST: one KV_DATA per block of the range this worker runs, in unit order.
  Expected<void> kv_request(const net::PeerId& peer, uint64_t rid, const net::KvRequest& m) {
    if (!runner) return make_error(ErrorCode::invalid_argument, "KV_REQUEST before the segment is ready");
    const int64_t L = model->hparams().n_layer;
    const int64_t first = std::max<int64_t>({static_cast<int64_t>(m.unit_first), runner->unit_first(), 1});
    const int64_t last = std::min<int64_t>({static_cast<int64_t>(m.unit_last), runner->unit_last(), L});
    if (first > last) {
      return make_error(ErrorCode::invalid_argument, "units " + std::to_string(m.unit_first) + "-" +
                                                         std::to_string(m.unit_last) + " hold no block of units " +
                                                         std::to_string(runner->unit_first()) + "-" +
                                                         std::to_string(runner->unit_last()));
    }
    if (!sequences.count(m.seq_id)) {
      return make_error(ErrorCode::not_found, "no KV cache for sequence " + std::to_string(m.seq_id));
    }
    for (int64_t u = first; u <= last; ++u) {
      LL_ASSIGN_OR_RETURN(auto rows, runner->export_kv(m.seq_id, u));
      net::KvData d;
      d.seq_id = m.seq_id;
      d.unit = static_cast<uint32_t>(u);
      d.n_pos = static_cast<uint32_t>(rows.n_pos);
      d.kv_dim = static_cast<uint32_t>(runner->kv_dim());
      d.k = std::move(rows.k);
      d.v = std::move(rows.v);
      LL_TRY(server->send(peer, d, rid));
    }
    return {};
  }

  // KV_DATA from the coordinator: store one block's cache for a (new) sequence; answer KV_STORED.
  Expected<void> kv_data(const net::PeerId& peer, uint64_t rid, const net::KvData& m) {
    if (!runner) return make_error(ErrorCode::invalid_argument, "KV_DATA before the segment is ready");
    if (static_cast<int64_t>(m.kv_dim) != runner->kv_dim()) {
      return make_error(ErrorCode::invalid_argument, "KV width " + std::to_string(m.kv_dim) +
                                                         " does not match the model's " +
                                                         std::to_string(runner->kv_dim()));
    }
    const bool fresh = !sequences.count(m.seq_id);
    if (fresh) {
      if (sequences.size() + 1 > k_max_sequences) {
        return make_error(ErrorCode::resource, "more than " + std::to_string(k_max_sequences) + " sequences at once");
      }
      const uint64_t need = baseline_rss + weight_bytes + (sequences.size() + 1) * kv_bytes_per_sequence +
                            k_reserve_bytes;
      evict_spares_for(need);
      LL_TRY(check_limit(plan::add_sat(need, spare_bytes), std::to_string(sequences.size() + 1) + " sequences"));
    }
    LL_TRY(runner->import_kv(m.seq_id, m.unit, m.n_pos, m.k, m.v));
    if (fresh) sequences.insert(m.seq_id);
    net::KvStored ack;
    ack.seq_id = m.seq_id;
    ack.unit = m.unit;
    ack.n_pos = m.n_pos;
    return server->send(peer, ack, rid);
  }

  // -------------------------------------------------------------------------- ACTIVATION_BATCH
  Expected<void> activation_batch(uint64_t request_id, const net::ActivationBatch& b) {
    if (!runner) return make_error(ErrorCode::invalid_argument, "ACTIVATION_BATCH before the segment is ready");
    const int64_t E = model->hparams().n_embd;
    if (static_cast<int64_t>(b.n_embd) != E) {
      return make_error(ErrorCode::invalid_argument, "hidden width " + std::to_string(b.n_embd) +
                                                         " does not match the model's " + std::to_string(E));
    }
    // New sequences must fit next to the ones held.
    size_t n_new = 0;
    std::set<int32_t> fresh;
    for (const auto& t : b.tokens) {
      if (!sequences.count(t.seq_id) && fresh.insert(t.seq_id).second) ++n_new;
    }
    if (n_new > 0) {
      if (sequences.size() + n_new > k_max_sequences) {
        return make_error(ErrorCode::resource, "more than " + std::to_string(k_max_sequences) + " sequences at once");
      }
      const uint64_t need = baseline_rss + weight_bytes + (sequences.size() + n_new) * kv_bytes_per_sequence +
                            k_reserve_bytes;
      evict_spares_for(need);
      LL_TRY(check_limit(plan::add_sat(need, spare_bytes), std::to_string(sequences.size() + n_new) + " sequences"));
    }
    batch.resize(b.tokens.size());
    for (size_t i = 0; i < b.tokens.size(); ++i) {
      batch[i] = model::BatchToken{b.tokens[i].seq_id, b.tokens[i].pos, 0, b.tokens[i].want_output};
    }
    LL_TRY(runner->forward(batch, b.hidden.data(), out));
    for (int32_t s : fresh) sequences.insert(s);
    ++counters.n_batches;
    counters.n_tokens += b.tokens.size();

    if (!runner->has_head()) {
      if (next) {
        net::ActivationBatch fwd;
        fwd.tokens = b.tokens;
        fwd.n_embd = b.n_embd;
        fwd.dtype = b.dtype;
        fwd.hidden = std::move(out);
        auto sent = next->send(fwd, request_id);
        out = std::move(fwd.hidden);
        if (!sent) return make_error(sent.error().code, "cannot forward to the next stage: " + sent.error().message);
        return {};
      }
      net::Result r;
      r.kind = net::ResultKind::hidden;
      r.tokens = b.tokens;
      r.width = b.n_embd;
      r.dtype = b.dtype;
      r.values = std::move(out);
      auto sent = server->send(coordinator, r, request_id);
      out = std::move(r.values);
      return sent;
    }
    // The head: logits for the rows that want output.
    const int64_t V = model->hparams().n_vocab;
    net::Result r;
    bool all_sampled = true;
    for (const auto& t : b.tokens) {
      if (!t.want_output) continue;
      r.tokens.push_back(t);
      if (!samplers.count(t.seq_id)) all_sampled = false;
    }
    if (all_sampled) {
      r.kind = net::ResultKind::token_ids;
      for (size_t i = 0; i < r.tokens.size(); ++i) {
        auto& sampler = samplers.at(r.tokens[i].seq_id);
        r.token_ids.push_back(sampler.sample(out.data() + i * static_cast<size_t>(V), V, {}));
      }
    } else {
      r.kind = net::ResultKind::logits;
      r.width = static_cast<uint32_t>(V);
      r.dtype = net::WireDType::f32;
      r.values = std::move(out);
    }
    auto sent = server->send(coordinator, r, request_id);
    if (r.kind == net::ResultKind::logits) out = std::move(r.values);
    return sent;
  }

  // ---------------------------------------------------------------------------------- dispatch
  void handle(net::IncomingMessage& in) {
    ++counters.n_messages;
    const net::PeerId& peer = in.peer;
    const uint64_t rid = in.request_id;
    const net::MessageType type = net::message_type(in.message);
    auto fail = [&](const Error& e) { reply_error(have_segment ? coordinator : peer, rid, type, e); };
    auto fail_peer = [&](const Error& e) { reply_error(peer, rid, type, e); };
    // A delegated peer (CURVE) is the previous stage, admitted by the coordinator's LOAD_SEGMENT: it
    // may forward the pipeline's frames, but never load, feed or inspect this worker.
    const bool pipeline_frame = type == net::MessageType::hello || type == net::MessageType::heartbeat ||
                                type == net::MessageType::error || type == net::MessageType::activation_batch ||
                                type == net::MessageType::sampling || type == net::MessageType::release_sequence;
    if (in.trust == net::PeerTrust::delegated && !pipeline_frame) {
      ++counters.n_bad_messages;
      const std::string why = net::message_type_name(type) + " from the previous stage: only a coordinator may send it";
      std::fprintf(stderr, "lingua worker %s: %s\n", opt.name.c_str(), why.c_str());
      (void)server->send(peer, net::make_error_message(net::WireError::unauthorized, why, static_cast<uint16_t>(type),
                                                       opt.limits),
                         rid);
      return;
    }
    std::visit(
        [&](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, net::Hello>) {
            (void)server->send(peer, hello(), rid);
          } else if constexpr (std::is_same_v<T, net::Heartbeat>) {
            (void)server->send(peer, m, rid);
          } else if constexpr (std::is_same_v<T, net::ErrorMessage>) {
            std::fprintf(stderr, "lingua worker %s: peer reported: %s\n", opt.name.c_str(),
                         net::to_error(m).message.c_str());
          } else if constexpr (std::is_same_v<T, net::LoadSegment>) {
            auto st = load_segment(peer, rid, std::move(m));
            if (!st) {
              drop_segment();
              fail_peer(st.error());
              return;
            }
            (void)server->send(peer, *st, rid);
          } else if constexpr (std::is_same_v<T, net::TensorChunk>) {
            auto done = tensor_chunk(peer, m);
            if (!done) {
              fail_peer(done.error());
              return;
            }
            if (*done) {
              net::SegmentStatus st;
              st.state = net::SegmentState::ready;
              st.missing.assign(missing.begin(), missing.end());  // (spares still on their way)
              (void)server->send(coordinator, st, load_request_id);
            }
          } else if constexpr (std::is_same_v<T, net::ActivationBatch>) {
            auto ok = activation_batch(rid, m);
            if (!ok) fail(ok.error());
          } else if constexpr (std::is_same_v<T, net::Sampling>) {
            if (runner && runner->has_head() && samplers.size() >= k_max_sequences && !samplers.count(m.seq_id)) {
              fail(make_error(ErrorCode::resource, "more than " + std::to_string(k_max_sequences) +
                                                       " sequences with SAMPLING at once"));
            } else if (runner && runner->has_head()) {
              model::SamplingParams p;
              p.temperature = m.temperature;
              p.top_k = m.top_k;
              p.top_p = m.top_p;
              p.min_p = m.min_p;
              p.repeat_penalty = 1.0f;
              p.seed = m.seed;
              samplers.insert_or_assign(m.seq_id, model::Sampler(p));
            } else if (next) {
              auto ok = next->send(m, rid);
              if (!ok) fail(ok.error());
            }
          } else if constexpr (std::is_same_v<T, net::ReleaseSequence>) {
            if (runner) runner->release_sequence(m.seq_id);
            sequences.erase(m.seq_id);
            samplers.erase(m.seq_id);
            if (next) {
              auto ok = next->send(m, rid);
              if (!ok) fail(ok.error());
            }
          } else if constexpr (std::is_same_v<T, net::StatsRequest>) {
            (void)server->send(peer, stats(), rid);
          } else if constexpr (std::is_same_v<T, net::KvRequest> || std::is_same_v<T, net::KvData>) {
            if (!opt.kv_moves) {
              fail_peer(make_error(ErrorCode::parse, "unknown message type " + net::message_type_name(type)));
              return;
            }
            Expected<void> ok;
            if constexpr (std::is_same_v<T, net::KvRequest>) {
              ok = kv_request(peer, rid, m);
            } else {
              ok = kv_data(peer, rid, m);
            }
            if (!ok) fail_peer(ok.error());
          } else {
            fail_peer(make_error(ErrorCode::invalid_argument,
                                 net::message_type_name(type) + " is not something a worker accepts"));
          }
        },
        in.message);
  }

  net::Stats stats() const {
    net::Stats s;
    s.uptime_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count());
    net::LinkStats ls = listener->stats();
    s.bytes_in = ls.bytes_in;
    s.bytes_out = ls.bytes_out;
    s.n_messages_in = ls.n_frames_in;
    s.n_messages_out = ls.n_frames_out;
    if (next_link) {
      net::LinkStats ns = next_link->stats();
      s.bytes_out += ns.bytes_out;
      s.n_messages_out += ns.n_frames_out;
    }
    s.n_bad_messages = counters.n_bad_messages + server->n_bad_messages();
    s.n_tokens = counters.n_tokens;
    s.rss_bytes = current_rss_bytes();
    s.peak_rss_bytes = peak_rss_bytes();
    if (runner) {
      for (const auto& t : runner->unit_timings()) {
        s.units.push_back(net::UnitStats{static_cast<uint32_t>(t.unit), t.n_tokens, t.compute_ms});
      }
    }
    return s;
  }

  // Errors the next stage reports about what we forwarded belong to the coordinator.
  void poll_next() {
    if (!next) return;
    for (;;) {
      auto m = next->recv(net::Millis(0));
      if (!m) {
        std::fprintf(stderr, "lingua worker %s: next stage: %s\n", opt.name.c_str(), m.error().message.c_str());
        return;
      }
      if (!*m) return;
      if (auto* e = std::get_if<net::ErrorMessage>(&(*m)->message)) {
        (void)server->send(coordinator, *e, (*m)->request_id);
      }
    }
  }
};

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Worker::~Worker() = default;

Expected<std::unique_ptr<Worker>> Worker::create(WorkerOptions options, net::Network& net) {
  auto impl = std::make_unique<Impl>();
  if (options.n_threads < 1 || options.n_threads > 256) {
    return make_error(ErrorCode::invalid_argument, "threads must be in 1..256");
  }
  impl->net = &net;
  LL_ASSIGN_OR_RETURN(impl->listener, net.listen(options.listen));
  if (options.name.empty()) {
    const std::string ep = impl->listener->endpoint();
    const size_t colon = ep.rfind(':');
    options.name = "worker-";
    options.name += colon == std::string::npos ? ep : ep.substr(colon + 1);
  }
  if (!options.model_path.empty()) {
    LL_ASSIGN_OR_RETURN(gguf::File f, gguf::File::open(options.model_path));
    impl->local_file = std::make_unique<gguf::File>(std::move(f));
    LL_ASSIGN_OR_RETURN(impl->local_identity, model_identity(*impl->local_file));
  }
  impl->opt = std::move(options);
  impl->server = std::make_unique<net::ServerChannel>(*impl->listener, impl->opt.limits);
  impl->pool = std::make_unique<ThreadPool>(impl->opt.n_threads);
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

std::string Worker::endpoint() const { return impl_->listener->endpoint(); }
net::Hello Worker::hello() const { return impl_->hello(); }
const std::string& Worker::name() const { return impl_->opt.name; }
WorkerCounters Worker::counters() const {
  WorkerCounters c = impl_->counters;
  c.n_bad_messages += impl_->server->n_bad_messages();
  return c;
}

Expected<void> Worker::serve(const std::function<bool()>& should_stop) {
  Impl& w = *impl_;
  while (!should_stop()) {
    auto in = w.server->recv(net::Millis(100));
    if (!in) {
      // Already counted and answered by the channel; keep serving.
      std::fprintf(stderr, "lingua worker %s: bad message: %s\n", w.opt.name.c_str(), in.error().message.c_str());
      continue;
    }
    if (*in) w.handle(**in);
    w.poll_next();
  }
  return {};
}

uint64_t tensor_resident_bytes(uint64_t n_bytes) {
  constexpr uint64_t k_page = 4096;
  return std::max(huge_pages_of(n_bytes) * k_huge_page, (n_bytes + k_page - 1) / k_page * k_page);
}

Expected<uint64_t> parse_byte_size(std::string_view text) {
  auto bad = [&] {
    std::string msg = "'";
    msg.append(text);
    msg += "' is not a size (examples: 1600MB, 1.5GiB, 800M, 123456)";
    return make_error(ErrorCode::invalid_argument, std::move(msg));
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return bad();
  double value = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + i, value);
  if (ec != std::errc() || p != text.data() + i || !std::isfinite(value)) return bad();
  std::string unit(text.substr(i));
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double mult = 0;
  static const std::pair<const char*, double> k_units[] = {
      {"", 1},          {"B", 1},          {"K", 1024.0},     {"KB", 1e3},      {"KIB", 1024.0},
      {"M", 1048576.0}, {"MB", 1e6},       {"MIB", 1048576.0}, {"G", 1073741824.0}, {"GB", 1e9},
      {"GIB", 1073741824.0}, {"T", 1099511627776.0}, {"TB", 1e12}, {"TIB", 1099511627776.0}};
  for (const auto& [name, m] : k_units) {
    if (unit == name) mult = m;
  }
  if (mult == 0) return bad();
  const double bytes = value * mult;
  if (bytes < 1 || bytes > 9.0e18) return bad();
  return static_cast<uint64_t>(bytes);
}

}  // namespace ll::runtime
