#include "runtime/coordinator.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/sampler.h"
#include "net/channel.h"
#include "plan/balance.h"
#include "plan/profile.h"
#include "runtime/model_source.h"
#include "runtime/probe.h"
#include "runtime/sysinfo.h"

namespace ll::runtime {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t k_chunk_bytes = 1u << 20;
constexpr size_t k_max_decode_batch = 256;  // tokens of one decode batch

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string mib(uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

bool penalty_active(const model::SamplingParams& p) { return p.repeat_penalty != 1.0f && p.repeat_last_n != 0; }

struct SegmentJob {
  int device;
  int64_t unit_first, unit_last;
  std::string next_endpoint;
  int next_device = 0;      // the worker at next_endpoint (0: none)
  int upstream_device = 0;  // the worker that forwards to this one (0: the coordinator feeds it)
  int spare_units = -1;     // units on each side to name as spares (-1: CoordinatorOptions::spare_units)
};

struct TransferStats {
  uint64_t bytes = 0;
  double ms = 0;
};

struct WorkerConn {
  std::string endpoint;
  std::unique_ptr<net::Link> link;
  std::unique_ptr<net::Channel> channel;
  std::string public_key;  // CURVE: the key this worker proved it holds; empty over plain links
  net::Hello hello;
  uint64_t weight_bytes = 0;
  bool dead = false;  // dropped by a failover: in no plan, asked nothing
  std::optional<uint64_t> bytes_streamed;  // weight bytes sent to it when its segment was last loaded
  // The units of the segment it was last loaded with (it keeps them while it is out of the plan).
  std::optional<std::pair<int64_t, int64_t>> held;
  std::vector<int> spare_units;  // units it holds as spares (LoadSegment::n_spare), as of that load
};

// A LOAD_SEGMENT about to be sent, with the tensors it names.
struct SegmentRequest {
  int device;
  uint64_t request_id;
  net::LoadSegment msg;
  std::vector<const gguf::TensorInfo*> infos;
  std::vector<int> spare_unit = {};  // per spare (msg.tensors' last n_spare): its unit
  size_t n_segment() const { return infos.size() - spare_unit.size(); }
};

// Waits for the answer to request `rid` on one link, skipping anything else.
using AwaitAnswer = std::function<Expected<net::Envelope>(uint64_t rid)>;

// Steps each device runs before its timed ones.
constexpr int kProfileWarmupSteps = 2;
// Re-measuring a worker out of the plan: untimed steps first, then timed ones for about this long.
constexpr int kIdleProbeWarmupSteps = 3;
constexpr double kIdleProbeTimedMs = 200;
// Tokens of hidden state in the batch that measures a link's bandwidth (when no weights streamed).
constexpr int kBandwidthProbeTokens = 32;

// Sends one single-token ACTIVATION_BATCH of sequence `seq` per position in [first, last), back to
// back, then waits for every answer: a device under a CPU quota (a phone that throttles, a cgroup)
// runs a short burst after a pause at full speed, and must not get a pause between the steps.
Expected<void> send_steps(net::Channel& ch, const AwaitAnswer& await, uint64_t& next_rid, const std::vector<float>& hidden,
                          int32_t seq, int32_t first, int32_t last, bool want_output) {
  std::vector<uint64_t> rids;
  for (int32_t k = first; k < last; ++k) {
    net::ActivationBatch ab;
    ab.tokens = {net::TokenMeta{seq, k, want_output}};
    ab.n_embd = static_cast<uint32_t>(hidden.size());
    ab.hidden = hidden;
    rids.push_back(next_rid++);
    LL_TRY(ch.send(ab, rids.back()));
  }
  for (uint64_t rid : rids) LL_TRY(await(rid));
  return {};
}

// Profiles one worker that holds the model's last block and its head (units L and L+1), over its
// own channel: link latency (HEARTBEAT round trips), its compute per token on block-only and full
// steps, and, when no weights streamed to it (`ts`), its link's bandwidth with one batch of hidden
// states. `next_rid` numbers the requests.
Expected<WorkerProbe> probe_worker(net::Channel& ch, const AwaitAnswer& await, uint64_t& next_rid,
                                   const TransferStats& ts, int n_steps, int64_t E, int64_t L, int64_t n_ctx,
                                   const std::string& name) {
  WorkerProbe out;
  std::vector<float> hidden(static_cast<size_t>(E));
  for (int64_t i = 0; i < E; ++i) hidden[static_cast<size_t>(i)] = 0.01f * static_cast<float>((i * 37) % 101 - 50);
  constexpr int32_t k_probe_seq = 0;
  double best_rtt = 1e30;
  for (int k = 0; k < 7; ++k) {
    const uint64_t rid = next_rid++;
    const auto t0 = Clock::now();
    LL_TRY(ch.send(net::Heartbeat{0, static_cast<uint64_t>(k)}, rid));
    LL_TRY(await(rid));
    best_rtt = std::min(best_rtt, ms_since(t0));
  }
  out.link_ms = best_rtt / 2;
  if (ts.bytes >= (1u << 20) && ts.ms > 0) out.link_bw = ts.bytes * 1000.0 / ts.ms;
  // Per-unit compute totals so far (ms, tokens) of the probed block and head.
  auto unit_totals = [&]() -> Expected<std::array<std::pair<double, uint64_t>, 2>> {
    const uint64_t rid = next_rid++;
    LL_TRY(ch.send(net::StatsRequest{}, rid));
    LL_ASSIGN_OR_RETURN(net::Envelope env, await(rid));
    auto* st = std::get_if<net::Stats>(&env.message);
    if (st == nullptr) return make_error(ErrorCode::parse, name + " answered STATS_REQUEST with something else");
    std::array<std::pair<double, uint64_t>, 2> t{};
    for (const auto& u : st->units) {
      if (u.unit == static_cast<uint32_t>(L)) t[0] = {u.compute_ms, u.n_tokens};
      if (u.unit == static_cast<uint32_t>(L + 1)) t[1] = {u.compute_ms, u.n_tokens};
    }
    return t;
  };
  // Steps k_first..k_last-1, sent back to back so that the worker runs them without a pause: a
  // device under a CPU quota (a phone that throttles, a cgroup) runs a short burst after a pause
  // at full speed, and would look far faster than it is over a whole segment.
  auto steps = [&](int k_first, int k_last, bool want_output) {
    return send_steps(ch, await, next_rid, hidden, k_probe_seq, k_first, k_last, want_output);
  };
  // The first steps pay for first touches (pages, caches, waking threads): time the later ones.
  // Then n_steps that run the block alone (no output wanted: the head is skipped), then n_steps
  // that run both. Under a CPU quota the pauses fall on whichever unit is running, so a step's
  // split between block and head is noise; the block-only steps give the block's sustained rate,
  // and the head is what the full steps take beyond it.
  LL_TRY(steps(0, kProfileWarmupSteps, true));
  LL_ASSIGN_OR_RETURN(auto before, unit_totals());
  const auto t_block = Clock::now();
  LL_TRY(steps(kProfileWarmupSteps, kProfileWarmupSteps + n_steps, false));
  const double block_wall_ms = std::max(0.0, ms_since(t_block) - 2 * out.link_ms) / n_steps;
  LL_ASSIGN_OR_RETURN(auto middle, unit_totals());
  LL_TRY(steps(kProfileWarmupSteps + n_steps, kProfileWarmupSteps + 2 * n_steps, true));
  LL_ASSIGN_OR_RETURN(auto after, unit_totals());
  // No weights streamed to measure the link by (the worker maps its own copy, or had them
  // cached): one batch of hidden states is the probe. Its round trip less the worker's compute for
  // it (from its totals) less the latency both ways is the time the bytes took.
  const int k_next = kProfileWarmupSteps + 2 * n_steps;
  const int n_probe = static_cast<int>(std::min<int64_t>(kBandwidthProbeTokens, n_ctx - 1 - k_next));
  if (out.link_bw >= 1e12 && n_probe >= 8) {
    net::ActivationBatch ab;
    for (int k = 0; k < n_probe; ++k) ab.tokens.push_back(net::TokenMeta{k_probe_seq, k_next + k, k + 1 == n_probe});
    ab.n_embd = static_cast<uint32_t>(E);
    for (int k = 0; k < n_probe; ++k) ab.hidden.insert(ab.hidden.end(), hidden.begin(), hidden.end());
    const uint64_t rid = next_rid++;
    const auto t0 = Clock::now();
    LL_TRY(ch.send(ab, rid));
    LL_TRY(await(rid));
    const double rtt = ms_since(t0);
    LL_ASSIGN_OR_RETURN(auto probed, unit_totals());
    const double compute = (probed[0].first - after[0].first) + (probed[1].first - after[1].first);
    const double bytes = static_cast<double>(n_probe) * static_cast<double>(E) * 4;
    const double transfer_ms = rtt - compute - 2 * out.link_ms;
    // Below a tenth of a millisecond the figure is noise: the link is as good as unlimited.
    if (transfer_ms > 0.1) out.link_bw = bytes * 1000.0 / transfer_ms;
  }
  LL_TRY(ch.send(net::ReleaseSequence{k_probe_seq}, next_rid++));
  auto per_token = [](std::pair<double, uint64_t> a, std::pair<double, uint64_t> b) {
    return b.second > a.second ? (b.first - a.first) / static_cast<double>(b.second - a.second) : 0.0;
  };
  // The head's one long matrix product takes a quota's pauses inside its timer: its figure is the
  // full steps' compute beyond the block's. The block's takes the steps' wall time into account.
  out.block_timed_ms = per_token(before[0], middle[0]);
  out.block_wall_ms = block_wall_ms;
  const double full_timed_ms = per_token(middle[0], after[0]) + per_token(middle[1], after[1]);
  out.head_ms = std::max(0.0, full_timed_ms - out.block_timed_ms);
  const double step_transfer_ms = out.link_bw < 1e12 ? static_cast<double>(E) * 4 * 1000.0 / out.link_bw : 0.0;
  out.block_ms = stage_block_ms(out.block_timed_ms, block_wall_ms, step_transfer_ms);
  out.full_ms = out.block_ms + out.head_ms;
  return out;
}

std::string describe_probe(const std::string& name, const WorkerProbe& p) {
  return "profiling " + name + ": block " + std::to_string(p.block_ms) + " ms/token, head " + std::to_string(p.head_ms) +
         " ms/token" +
         (p.block_wall_ms > 0 ? " (block steps: " + std::to_string(p.block_timed_ms) + " ms computing, " +
                                    std::to_string(p.block_wall_ms) + " ms apart)"
                              : std::string()) +
         ", link " + std::to_string(p.link_ms) + " ms, " +
         (p.link_bw >= 1e12 ? std::string("bandwidth not measured") : std::to_string(p.link_bw * 8e-6) + " Mbit/s");
}

}  // namespace

struct Coordinator::Impl {
  const model::Model* model = nullptr;
  net::Network* net = nullptr;
  CoordinatorOptions opt;
  std::vector<WorkerConn> workers;  // index 0 unused (device 0 is the origin)
  std::vector<Stage> stages;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<model::UnitRunner> head_runner;  // origin's first stage
  std::unique_ptr<model::UnitRunner> tail_runner;  // origin's last stage with ring
  uint64_t next_request_id = 1;
  // Answers to requests below this id belong to a plan a failover abandoned: recv_any drops them
  // (results, and errors such as "cannot forward to the next stage" from the survivors).
  uint64_t stale_below = 0;
  RunStats last_stats;
  // SHA-256 of every tensor sent to a worker so far (a re-plan loads many of them again). Guarded by
  // hash_mu: a joining worker's thread computes some too.
  std::map<std::string, net::Sha256Digest> tensor_hashes;
  std::mutex hash_mu;
  std::optional<net::Sha256Digest> model_hash;  // LOAD_SEGMENT's model_hash and metadata (hash_mu)
  std::vector<uint8_t> model_metadata;

  // Membership: one background attempt per worker being added (add_worker, late workers).
  struct Joiner {
    std::string endpoint, public_key;
    std::thread thread;
    // Written by the thread before it sets `finished`:
    std::optional<WorkerConn> conn;
    WorkerProbe probe;
    std::optional<Error> error;
    std::vector<std::string> notes;  // for the log, written out by poll_joins (opt.log is not thread-safe)
    std::atomic<bool> finished{false};
  };
  mutable std::mutex join_mu;  // joiners
  std::vector<std::unique_ptr<Joiner>> joiners;
  std::atomic<bool> stop_joining{false};
  std::atomic<int> n_join_finished{0};
  std::vector<JoinedDevice> joined;
  net::Hello mine;  // our HELLO
  // From the last measure_profile(), to place a joining worker's figures beside the others': the
  // origin's head / block ratio (0: not measured), the streaming correction, the embedding's ms.
  double profile_head_ratio = 0, profile_stream_ratio = 1, profile_embed_ms = 0;
  std::vector<double> profile_batch_factors{1.0};

  // Re-measuring workers out of the plan (balancing): one probe at a time per worker, on a link of
  // its own, over the units it still holds.
  struct IdleProbe {
    std::thread thread;
    std::atomic<bool> finished{false}, abort{false};
    double block_ms = std::nan("");  // ms per block per token
    std::optional<Error> error;
  };
  std::map<int, std::unique_ptr<IdleProbe>> idle_probes;
  // Monitoring state that outlives one generate() call (`lingua serve` calls it once per batch, and
  // a batch may be shorter than a window, so windows span batches): the units' totals at the last
  // window by device, the moving estimate per unit (both reset when a plan is loaded), and when the
  // next window is due (epoch: not yet set).
  std::map<int, std::map<int64_t, std::pair<uint64_t, double>>> monitor_prev;
  std::vector<double> unit_ms_estimate;
  Clock::time_point next_monitor{};
  std::map<int, Clock::time_point> last_idle_probe;  // when each worker's last probe ended
  void start_idle_probes();
  // Finished probes' ms per block by device (NaN where none finished); logs them.
  std::vector<double> collect_idle_probes();
  void stop_idle_probe(int device);  // aborts and waits (before the worker is loaded again)
  void run_idle_probe(int device, std::string endpoint, std::string key, std::pair<int64_t, int64_t> held,
                      IdleProbe& p);

  ~Impl() {
    for (auto& [d, p] : idle_probes) {
      p->abort = true;
      if (p->thread.joinable()) p->thread.join();
    }
    stop_joining = true;
    std::lock_guard<std::mutex> lock(join_mu);
    for (auto& j : joiners) {
      if (j->thread.joinable()) j->thread.join();
    }
  }

  void log(const std::string& s) const {
    if (opt.log) opt.log(s);
  }
  WorkerConn& worker(int device) { return workers[static_cast<size_t>(device)]; }
  const Stage& first_worker_stage() const { return stages[1]; }
  size_t n_worker_stages() const {
    size_t n = 0;
    for (const Stage& st : stages) n += st.device != 0 ? 1 : 0;
    return n;
  }
  // Stages that compute: all but an origin stage holding only the embedding (a table lookup). The
  // origin's own blocks or head are a stage of the pipeline like a worker's.
  size_t n_compute_stages() const {
    size_t n = 0;
    for (const Stage& st : stages) n += st.device == 0 && st.first_unit == 0 && st.last_unit == 0 ? 0 : 1;
    return n;
  }
  // Decode batches in flight by default: one per computing stage, so each works on its own sequences.
  size_t max_decode_batches() const {
    return opt.decode_batches > 0 ? static_cast<size_t>(opt.decode_batches) : std::max<size_t>(1, n_compute_stages());
  }

  std::string device_name(int device) const {
    return device == 0 ? opt.origin_name : workers[static_cast<size_t>(device)].hello.name;
  }

  // Whether worker d is gone: dropped by a failover, or its link reports the peer lost (sticky, so
  // `dead` only caches it).
  bool lost(int d) {
    WorkerConn& w = worker(d);
    if (!w.dead && w.link && w.link->peer_lost()) w.dead = true;
    if (w.dead) close_link(d);
    return w.dead;
  }
  // A lost worker's link would only go on reconnecting, each attempt an event for its monitor that
  // nobody reads any more (once the monitor's queue is full, libzmq's I/O thread blocks on it, and
  // every other link of the process stalls): closed as soon as the worker is known to be gone.
  void close_link(int d) {
    WorkerConn& w = worker(d);
    w.channel.reset();
    w.link.reset();
  }
  // Workers of the current plan that are gone.
  std::vector<int> lost_plan_workers() {
    std::vector<int> out;
    for (const Stage& st : stages) {
      if (st.device != 0 && lost(st.device)) out.push_back(st.device);
    }
    return out;
  }
  std::string describe_plan(const std::vector<Stage>& plan) const {
    std::string out;
    for (const Stage& st : plan) {
      if (!out.empty()) out += ", ";
      out.append(device_name(st.device)).append(" ").append(std::to_string(st.first_unit)).append("-").append(
          std::to_string(st.last_unit));
    }
    return out;
  }

  // Waits for the next message from any worker. When nothing arrived for one 500 ms polling step and
  // a worker of the plan is lost, fails naming it instead of waiting out `timeout` (a lost stage
  // stalls the pipeline, so the quiet step comes; checking only then keeps the monitors' reads off
  // the path of every answer, and lets answers already queued from live workers be read first).
  Expected<std::pair<int, net::Envelope>> recv_any(net::Millis timeout) {
    std::vector<net::Link*> links;
    std::vector<int> link_device;  // links[i] belongs to worker link_device[i] (lost ones have none)
    for (size_t i = 1; i < workers.size(); ++i) {
      if (!workers[i].link) continue;
      links.push_back(workers[i].link.get());
      link_device.push_back(static_cast<int>(i));
    }
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<net::Millis>(deadline - Clock::now());
      if (left.count() <= 0) break;
      if (opt.should_stop && opt.should_stop()) return make_error(ErrorCode::resource, "interrupted");
      LL_ASSIGN_OR_RETURN(std::optional<size_t> ready, net::wait_any(links, std::min(left, net::Millis(500))));
      if (!ready) {  // quiet (or a signal): a lost stage would explain it
        if (auto gone = lost_plan_workers(); !gone.empty()) {
          return make_error(ErrorCode::io, device_name(gone.front()) + " (" + worker(gone.front()).endpoint +
                                               "): its connection closed or its heartbeats stopped");
        }
        continue;
      }
      const int device = link_device[*ready];
      auto m = worker(device).channel->recv(net::Millis(0));
      if (!m) {
        return make_error(m.error().code, "bad message from " + device_name(device) + ": " + m.error().message);
      }
      if (!*m) continue;
      if ((*m)->request_id < stale_below) continue;  // from an abandoned plan
      if (auto* e = std::get_if<net::ErrorMessage>(&(*m)->message)) {
        Error err = net::to_error(*e);
        return make_error(err.code, device_name(device) + ": " + err.message);
      }
      return std::make_pair(device, std::move(**m));
    }
    return make_error(ErrorCode::resource, "no answer from the workers within " +
                                               std::to_string(timeout.count() / 1000) + " s");
  }

  Expected<void> load_workers(bool fetch_spares);
  // Holds the units of the origin's stages in memory and gives back the rest (load_plan).
  void hold_origin_units() {
    std::vector<bool> mine(static_cast<size_t>(model->n_units()), false);
    for (const Stage& st : stages) {
      if (st.device != 0) continue;
      for (int64_t u = st.first_unit; u <= st.last_unit; ++u) mine[static_cast<size_t>(u)] = true;
    }
    for (int64_t u = 0; u < model->n_units(); ++u) {
      if (!mine[static_cast<size_t>(u)]) (void)release_units_memory(*model, u, u);
    }
    for (const Stage& st : stages) {
      if (st.device == 0) {
        (void)hold_units_in_memory(*model, st.first_unit, st.last_unit, [this](const std::string& s) { log(s); });
      }
    }
  }
  // Loads each job's units onto its worker (streaming what it lacks); per worker, the bytes streamed
  // and how long that took.
  // With `fetch_spares`, the spares each worker has room for stream too (else it keeps those it holds).
  Expected<std::map<int, TransferStats>> load_segments(const std::vector<SegmentJob>& jobs,
                                                       const std::set<std::string>& origin_tensors, bool fetch_spares);
  // The LOAD_SEGMENT for a job (tensor hashes computed once; `hashed` adds the bytes hashed now).
  Expected<SegmentRequest> segment_request(const SegmentJob& job, uint64_t request_id,
                                           const std::set<std::string>& origin_tensors, uint64_t& hashed);
  // Streams tensors `which` (indices a worker's SEGMENT_STATUS asked for) over `ch`.
  Expected<TransferStats> stream_missing(net::Channel& ch, const SegmentRequest& p, const std::vector<uint32_t>& which,
                                         const std::set<std::string>& origin_tensors, const std::string& name,
                                         const std::function<void(const std::string&)>& say);
  // The planner's row for a device from its (corrected) block and head figures.
  plan::DeviceProfile device_row(int device, double block_ms, double head_ms) const;
  uint64_t unit_memory(int device) const;
  // A joiner's thread: reach the worker, say HELLO, profile it.
  void run_joiner(Joiner& j);
  void start_joiner(const std::string& endpoint, const std::string& public_key);
};

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;

int Coordinator::n_workers() const { return static_cast<int>(impl_->workers.size()) - 1; }
const net::Hello& Coordinator::worker_hello(int worker) const { return impl_->workers.at(static_cast<size_t>(worker)).hello; }
const std::string& Coordinator::worker_endpoint(int worker) const {
  return impl_->workers.at(static_cast<size_t>(worker)).endpoint;
}
const std::vector<Stage>& Coordinator::stages() const { return impl_->stages; }
bool Coordinator::worker_alive(int worker) const { return !impl_->workers.at(static_cast<size_t>(worker)).dead; }
RunStats Coordinator::last_run_stats() const { return impl_->last_stats; }

Expected<std::unique_ptr<Coordinator>> Coordinator::connect(const model::Model& model, net::Network& net,
                                                            const std::vector<std::string>& worker_endpoints,
                                                            CoordinatorOptions options) {
  if (worker_endpoints.empty()) return make_error(ErrorCode::invalid_argument, "no workers to connect to");
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->net = &net;
  impl->opt = std::move(options);
  impl->workers.resize(worker_endpoints.size() + 1);
  net::Hello mine;
  mine.role = net::Role::coordinator;
  mine.name = impl->opt.origin_name;
  mine.n_threads = static_cast<uint32_t>(impl->opt.n_threads);
  mine.free_memory_bytes = available_memory_bytes();
  const std::vector<std::string>& keys = impl->opt.worker_public_keys;
  if (!keys.empty() && keys.size() != worker_endpoints.size()) {
    return make_error(ErrorCode::invalid_argument, std::to_string(keys.size()) + " worker public keys for " +
                                                       std::to_string(worker_endpoints.size()) + " workers");
  }
  // Say HELLO to everyone first, then collect the answers, so slow workers answer in parallel.
  for (size_t i = 0; i < worker_endpoints.size(); ++i) {
    WorkerConn& w = impl->workers[i + 1];
    w.endpoint = worker_endpoints[i];
    if (!keys.empty()) w.public_key = keys[i];
    auto link = net.connect(w.endpoint, w.public_key);
    // (In-process: nobody listens there yet. A late worker, when those are allowed.)
    if (!link && link.error().code == ErrorCode::not_found && impl->opt.late_workers) continue;
    if (!link) return link.error();
    w.link = std::move(*link);
    w.channel = std::make_unique<net::Channel>(*w.link);
  }
  std::vector<size_t> late;  // (with opt.late_workers) no HELLO in time: tried in the background
  std::optional<Error> first_timeout;
  for (size_t i = 1; i < impl->workers.size(); ++i) {
    WorkerConn& w = impl->workers[i];
    if (!w.channel) {
      if (!first_timeout) first_timeout = make_error(ErrorCode::io, "worker at " + w.endpoint + ": nobody listens there");
      late.push_back(i);
      continue;
    }
    auto h = w.channel->handshake(mine, net::Role::worker, impl->opt.connect_timeout, impl->opt.should_stop);
    if (!h) {
      if (std::optional<std::string> why = w.link->security_failure()) {
        return make_error(ErrorCode::invalid_argument, "could not authenticate worker at " + w.endpoint + ": " + *why);
      }
      if (impl->opt.should_stop && impl->opt.should_stop()) return h.error();  // interrupted
      Error e = make_error(h.error().code, "worker at " + w.endpoint + ": " + h.error().message);
      const bool timed_out = h.error().code == ErrorCode::resource || h.error().code == ErrorCode::io;
      if (!impl->opt.late_workers || !timed_out) return e;
      if (!first_timeout) first_timeout = e;
      late.push_back(i);
      continue;
    }
    w.hello = *h;
  }
  impl->mine = mine;  // (joiners say HELLO with it)
  if (!late.empty()) {
    if (late.size() + 1 == impl->workers.size()) return *first_timeout;  // nobody answered
    std::vector<WorkerConn> present;
    present.emplace_back();
    for (size_t i = 1; i < impl->workers.size(); ++i) {
      if (std::find(late.begin(), late.end(), i) == late.end()) present.push_back(std::move(impl->workers[i]));
    }
    std::vector<std::pair<std::string, std::string>> retry;
    for (size_t i : late) retry.emplace_back(impl->workers[i].endpoint, impl->workers[i].public_key);
    impl->workers = std::move(present);
    for (const auto& [endpoint, key] : retry) {
      impl->log("worker at " + endpoint + " did not answer within " +
                std::to_string(impl->opt.connect_timeout.count() / 1000.0).substr(0, 4) +
                " s: going on without it; it joins when it answers");
      impl->start_joiner(endpoint, key);
    }
  }
  std::set<std::string> names;
  for (size_t i = 1; i < impl->workers.size(); ++i) {
    if (!names.insert(impl->workers[i].hello.name).second) {
      impl->workers[i].hello.name += "#" + std::to_string(i);  // keep reports unambiguous
    }
  }
  impl->pool = std::make_unique<ThreadPool>(impl->opt.n_threads);
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

// ------------------------------------------------------------------------------------- membership

void Coordinator::add_worker(const std::string& endpoint, const std::string& public_key) {
  impl_->start_joiner(endpoint, public_key);
}

std::vector<std::string> Coordinator::joining() const {
  std::lock_guard<std::mutex> lock(impl_->join_mu);
  std::vector<std::string> out;
  for (const auto& j : impl_->joiners) out.push_back(j->endpoint);
  return out;
}

const std::vector<JoinedDevice>& Coordinator::joined() const { return impl_->joined; }

void Coordinator::Impl::start_joiner(const std::string& endpoint, const std::string& public_key) {
  std::lock_guard<std::mutex> lock(join_mu);
  for (const auto& j : joiners) {
    if (j->endpoint == endpoint) return;  // already being tried
  }
  auto j = std::make_unique<Joiner>();
  j->endpoint = endpoint;
  j->public_key = public_key;
  Joiner* jp = j.get();
  joiners.push_back(std::move(j));
  jp->thread = std::thread([this, jp] { run_joiner(*jp); });
}

void Coordinator::Impl::run_joiner(Joiner& j) {
  auto finish = [&] {
    j.finished = true;
    ++n_join_finished;
  };
  // Reach it: a fresh link per attempt (a HELLO queued on a link that never connected would arrive
  // twice otherwise).
  std::unique_ptr<net::Link> link;
  std::unique_ptr<net::Channel> ch;
  net::Hello hello;
  for (;;) {
    if (stop_joining) return finish();
    auto l = net->connect(j.endpoint, j.public_key);
    if (!l) {
      if (l.error().code != ErrorCode::not_found) {  // (in-process: nobody listens there yet)
        j.error = l.error();
        return finish();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    auto c = std::make_unique<net::Channel>(**l);
    auto h = c->handshake(mine, net::Role::worker, net::Millis(1000));
    if (h) {
      link = std::move(*l);
      ch = std::move(c);
      hello = *h;
      break;
    }
    if (std::optional<std::string> why = (*l)->security_failure()) {
      j.error = make_error(ErrorCode::invalid_argument, "could not authenticate the worker: " + *why);
      return finish();
    }
    if (h.error().code != ErrorCode::resource && h.error().code != ErrorCode::io) {
      j.error = h.error();
      return finish();
    }
  }
  // Profile it on its own link: the last block and the head, as measure_profile() does.
  const model::HParams& hp = model->hparams();
  const int64_t L = hp.n_layer;
  uint64_t rid = 1;
  auto await = [&](uint64_t want) -> Expected<net::Envelope> {
    const auto deadline = Clock::now() + opt.timeout;
    for (;;) {
      if (stop_joining) return make_error(ErrorCode::resource, "stopped");
      if (link->peer_lost()) return make_error(ErrorCode::io, "its connection closed or its heartbeats stopped");
      if (Clock::now() > deadline) return make_error(ErrorCode::resource, "no answer in time");
      LL_ASSIGN_OR_RETURN(auto m, ch->recv(net::Millis(200)));
      if (!m) continue;
      if (auto* e = std::get_if<net::ErrorMessage>(&m->message)) return net::to_error(*e);
      if (m->request_id == want) return std::move(*m);
    }
  };
  auto profile = [&]() -> Expected<void> {
    uint64_t hashed = 0;
    SegmentJob job{0, L, L + 1, ""};
    job.spare_units = 0;  // (a probe: the plan decides what it will run)
    LL_ASSIGN_OR_RETURN(SegmentRequest req, segment_request(job, rid++, {}, hashed));
    LL_TRY(ch->send(req.msg, req.request_id));
    TransferStats ts;
    for (;;) {
      LL_ASSIGN_OR_RETURN(net::Envelope env, await(req.request_id));
      auto* st = std::get_if<net::SegmentStatus>(&env.message);
      if (st == nullptr) return make_error(ErrorCode::parse, "answered LOAD_SEGMENT with something else");
      if (st->state == net::SegmentState::ready) break;
      LL_ASSIGN_OR_RETURN(ts, stream_missing(*ch, req, st->missing, {}, hello.name,
                                             [&](const std::string& m) { j.notes.push_back(m); }));
    }
    LL_ASSIGN_OR_RETURN(j.probe, probe_worker(*ch, await, rid, ts, opt.join_profile_steps, hp.n_embd, L, opt.n_ctx,
                                              hello.name));
    return {};
  };
  if (auto ok = profile(); !ok) {
    j.error = make_error(ok.error().code, "it answered, but profiling it failed: " + ok.error().message);
    return finish();
  }
  WorkerConn conn;
  conn.endpoint = j.endpoint;
  conn.public_key = j.public_key;
  conn.hello = hello;
  conn.held = std::make_pair(L, L + 1);  // (the probe segment: re-measured from it while out of the plan)
  conn.link = std::move(link);
  conn.channel = std::move(ch);
  j.conn = std::move(conn);
  finish();
}

int Coordinator::poll_joins() {
  Impl& c = *impl_;
  if (c.n_join_finished.load() == 0) return 0;
  std::vector<std::unique_ptr<Impl::Joiner>> done;
  {
    std::lock_guard<std::mutex> lock(c.join_mu);
    for (auto it = c.joiners.begin(); it != c.joiners.end();) {
      if ((*it)->finished) {
        done.push_back(std::move(*it));
        it = c.joiners.erase(it);
      } else {
        ++it;
      }
    }
  }
  int n = 0;
  for (auto& j : done) {
    --c.n_join_finished;
    if (j->thread.joinable()) j->thread.join();
    for (const auto& note : j->notes) c.log(note);
    if (!j->conn) {
      if (j->error && !c.stop_joining) c.log("worker at " + j->endpoint + " cannot join: " + j->error->message);
      continue;
    }
    const int device = static_cast<int>(c.workers.size());
    c.workers.push_back(std::move(*j->conn));
    WorkerConn& w = c.workers.back();
    for (size_t i = 0; i + 1 < c.workers.size(); ++i) {
      if ((i == 0 ? c.opt.origin_name : c.workers[i].hello.name) == w.hello.name) {
        w.hello.name += "#" + std::to_string(device);  // keep reports unambiguous
        break;
      }
    }
    WorkerProbe p = j->probe;
    c.log(describe_probe(w.hello.name, p));
    if (fix_odd_split(p, c.profile_head_ratio)) {
      c.log("profiling " + w.hello.name + ": block and head apart are noise; its step split as the origin's");
    }
    p.block_ms *= c.profile_stream_ratio;
    p.head_ms *= c.profile_stream_ratio;
    JoinedDevice jd;
    jd.device = device;
    jd.profile = c.device_row(device, p.block_ms, p.head_ms);
    jd.link_latency_ms = p.link_ms;
    jd.link_bandwidth_bytes_per_s = p.link_bw;
    c.joined.push_back(std::move(jd));
    c.log(w.hello.name + " (" + w.endpoint + ") joined as worker " + std::to_string(device) +
          ": offered units at the next re-plan");
    ++n;
  }
  return n;
}

// ----------------------------------------------------------------------------- idle re-measuring

void Coordinator::Impl::start_idle_probes() {
  if (opt.idle_probe_interval.count() <= 0) return;
  const auto now = Clock::now();
  for (int w = 1; w < static_cast<int>(workers.size()); ++w) {
    WorkerConn& wc = worker(w);
    if (wc.dead || !wc.held || idle_probes.count(w)) continue;
    bool in_plan = false;
    for (const Stage& st : stages) in_plan = in_plan || st.device == w;
    if (in_plan) continue;
    const int64_t L = model->hparams().n_layer;
    if (std::max<int64_t>(1, wc.held->first) > std::min<int64_t>(L, wc.held->second)) continue;  // no block held
    if (auto it = last_idle_probe.find(w); it != last_idle_probe.end() && now - it->second < opt.idle_probe_interval) {
      continue;
    }
    auto p = std::make_unique<IdleProbe>();
    IdleProbe* pp = p.get();
    const std::string endpoint = wc.endpoint, key = wc.public_key;
    const auto held = *wc.held;
    p->thread = std::thread([this, w, endpoint, key, held, pp] { run_idle_probe(w, endpoint, key, held, *pp); });
    idle_probes[w] = std::move(p);
  }
}

std::vector<double> Coordinator::Impl::collect_idle_probes() {
  std::vector<double> out(workers.size(), std::nan(""));
  for (auto it = idle_probes.begin(); it != idle_probes.end();) {
    IdleProbe& p = *it->second;
    if (!p.finished) {
      ++it;
      continue;
    }
    if (p.thread.joinable()) p.thread.join();
    const int d = it->first;
    last_idle_probe[d] = Clock::now();
    if (p.error) {
      log("re-measuring " + device_name(d) + " (out of the plan): " + p.error->message);
    } else if (d < static_cast<int>(out.size())) {
      out[static_cast<size_t>(d)] = p.block_ms;
      log("re-measured " + device_name(d) + " (out of the plan): " + std::to_string(p.block_ms) + " ms per block");
    }
    it = idle_probes.erase(it);
  }
  return out;
}

void Coordinator::Impl::stop_idle_probe(int device) {
  auto it = idle_probes.find(device);
  if (it == idle_probes.end()) return;
  it->second->abort = true;
  if (it->second->thread.joinable()) it->second->thread.join();
  last_idle_probe[device] = Clock::now();
  idle_probes.erase(it);
}

void Coordinator::Impl::run_idle_probe(int device, std::string endpoint, std::string key,
                                       std::pair<int64_t, int64_t> held, IdleProbe& p) {
  auto body = [&]() -> Expected<double> {
    LL_ASSIGN_OR_RETURN(auto link, net->connect(endpoint, key));
    net::Channel ch(*link);
    LL_TRY(ch.handshake(mine, net::Role::worker, net::Millis(2000)));
    uint64_t rid = 1;
    auto await = [&](uint64_t want) -> Expected<net::Envelope> {
      const auto deadline = Clock::now() + std::min(opt.timeout, net::Millis(30000));
      for (;;) {
        if (p.abort) return make_error(ErrorCode::resource, "stopped");
        if (link->peer_lost()) return make_error(ErrorCode::io, "its connection closed or its heartbeats stopped");
        if (Clock::now() > deadline) return make_error(ErrorCode::resource, "no answer in time");
        LL_ASSIGN_OR_RETURN(auto m, ch.recv(net::Millis(100)));
        if (!m) continue;
        if (auto* e = std::get_if<net::ErrorMessage>(&m->message)) return net::to_error(*e);
        if (m->request_id == want) return std::move(*m);
      }
    };
    // The segment it holds: nothing to send (a worker that would need weights is not probed).
    uint64_t hashed = 0;
    LL_ASSIGN_OR_RETURN(SegmentRequest req, segment_request(SegmentJob{device, held.first, held.second, ""}, rid++, {},
                                                            hashed));
    LL_TRY(ch.send(req.msg, req.request_id));
    LL_ASSIGN_OR_RETURN(net::Envelope env, await(req.request_id));
    auto* st = std::get_if<net::SegmentStatus>(&env.message);
    if (st == nullptr || st->state != net::SegmentState::ready) {
      return make_error(ErrorCode::unsupported, "it no longer holds units " + std::to_string(held.first) + "-" +
                                                    std::to_string(held.second) + " (not probed)");
    }
    const int64_t E = model->hparams().n_embd, L = model->hparams().n_layer;
    const int64_t first = std::max<int64_t>(1, held.first), last = std::min<int64_t>(L, held.second);
    std::vector<float> hidden(static_cast<size_t>(E));
    for (int64_t i = 0; i < E; ++i) hidden[static_cast<size_t>(i)] = 0.01f * static_cast<float>((i * 37) % 101 - 50);
    auto totals = [&]() -> Expected<std::pair<double, uint64_t>> {  // blocks' compute ms, tokens
      const uint64_t r = rid++;
      LL_TRY(ch.send(net::StatsRequest{}, r));
      LL_ASSIGN_OR_RETURN(net::Envelope e, await(r));
      auto* stats = std::get_if<net::Stats>(&e.message);
      if (stats == nullptr) return make_error(ErrorCode::parse, "answered STATS_REQUEST with something else");
      std::pair<double, uint64_t> t{0, 0};
      for (const auto& u : stats->units) {
        if (u.unit < static_cast<uint32_t>(first) || u.unit > static_cast<uint32_t>(last)) continue;
        t.first += u.compute_ms;
        t.second = std::max<uint64_t>(t.second, u.n_tokens);
      }
      return t;
    };
    int32_t pos = 0;
    auto steps = [&](int n) {
      const int32_t from = pos;
      pos = std::min<int32_t>(pos + n, static_cast<int32_t>(opt.n_ctx) - 1);
      return send_steps(ch, await, rid, hidden, 0, from, pos, false);
    };
    // A few untimed steps (first touches) also say how long a step takes; then the timed steps,
    // enough for about 200 ms, all sent at once: a device under a CPU quota that rests between
    // steps (a round trip each) saves its quota in the pause and runs the next step at full speed,
    // so steps sent in small groups came out twice as fast as the same device ran in the plan.
    const auto t_warm = Clock::now();
    LL_TRY(steps(kIdleProbeWarmupSteps));
    const double step_ms = std::max(0.01, ms_since(t_warm) / kIdleProbeWarmupSteps);
    const int n_timed = std::clamp(static_cast<int>(std::ceil(kIdleProbeTimedMs / step_ms)), 2, 32);
    LL_ASSIGN_OR_RETURN(auto before, totals());
    LL_TRY(steps(n_timed));
    LL_ASSIGN_OR_RETURN(auto after, totals());
    (void)ch.send(net::ReleaseSequence{0}, rid++);
    if (after.second <= before.second) return make_error(ErrorCode::internal, "no timed steps");
    double block_ms = (after.first - before.first) / static_cast<double>(after.second - before.second) /
                      static_cast<double>(last - first + 1);
    // One block run over and over stays in the caches, as in profiling: scaled as the profile was
    // (measure_profile's stream ratio), so the figure compares with the profile's.
    if (last == first) block_ms *= profile_stream_ratio;
    return block_ms;
  };
  auto got = body();
  if (got) {
    p.block_ms = *got;
  } else {
    p.error = got.error();
  }
  p.finished = true;
}

// ---------------------------------------------------------------------------------------- loading

Expected<void> Coordinator::load(std::vector<Stage> stages) { return load_plan(std::move(stages), true); }

Expected<void> Coordinator::load_plan(std::vector<Stage> stages, bool fetch_spares) {
  Impl& c = *impl_;
  poll_joins();
  c.monitor_prev.clear();  // (new segments: the units' totals start again)
  c.unit_ms_estimate.assign(static_cast<size_t>(c.model->n_units()), std::nan(""));
  for (const Stage& st : stages) {
    if (st.device != 0) c.stop_idle_probe(st.device);  // (its own link would compete with the plan's)
  }
  LL_TRY(validate_split(stages, c.model->n_units(), n_workers(), c.opt.ring));
  c.stages = std::move(stages);
  c.head_runner.reset();
  c.tail_runner.reset();
  if (c.opt.hold_weights_in_memory) c.hold_origin_units();
  const Stage& s0 = c.stages.front();
  LL_ASSIGN_OR_RETURN(c.head_runner,
                      model::UnitRunner::create(*c.model, s0.first_unit, s0.last_unit, *c.pool, c.opt.n_ctx));
  if (c.opt.ring && c.stages.size() >= 2) {  // a one-stage ring plan is the origin alone
    const Stage& sl = c.stages.back();
    LL_ASSIGN_OR_RETURN(c.tail_runner,
                        model::UnitRunner::create(*c.model, sl.first_unit, sl.last_unit, *c.pool, c.opt.n_ctx));
  }
  return c.load_workers(fetch_spares);
}

Expected<void> Coordinator::Impl::load_workers(bool fetch_spares) {
  std::vector<SegmentJob> jobs;
  for (size_t i = 1; i < stages.size(); ++i) {
    const Stage& st = stages[i];
    if (st.device == 0) continue;  // the origin's tail with ring
    const bool next_is_worker = i + 1 < stages.size() && stages[i + 1].device != 0;
    const bool prev_is_worker = stages[i - 1].device != 0;
    jobs.push_back(SegmentJob{st.device, st.first_unit, st.last_unit,
                              next_is_worker ? workers[static_cast<size_t>(stages[i + 1].device)].endpoint : "",
                              next_is_worker ? stages[i + 1].device : 0, prev_is_worker ? stages[i - 1].device : 0});
  }
  std::set<std::string> origin_tensors;
  for (const Stage& st : stages) {
    if (st.device != 0) continue;
    for (auto& n : segment_tensor_names(*model, st.first_unit, st.last_unit)) origin_tensors.insert(std::move(n));
  }
  auto loaded = load_segments(jobs, origin_tensors, fetch_spares);
  if (!loaded) return loaded.error();
  for (const auto& job : jobs) {
    auto it = loaded->find(job.device);
    worker(job.device).bytes_streamed = it == loaded->end() ? 0 : it->second.bytes;
  }
  return {};
}

Expected<SegmentRequest> Coordinator::Impl::segment_request(const SegmentJob& job, uint64_t request_id,
                                                             const std::set<std::string>& origin_tensors,
                                                             uint64_t& hashed) {
  net::Sha256Digest identity;
  std::vector<uint8_t> metadata;
  {  // (the same for every segment: computed once; probe and join threads come here too)
    std::lock_guard<std::mutex> lock(hash_mu);
    if (!model_hash) {
      LL_ASSIGN_OR_RETURN(net::Sha256Digest h, model_identity(model->file()));
      LL_ASSIGN_OR_RETURN(model_metadata, model::segment_metadata(*model));
      model_hash = h;
    }
    identity = *model_hash;
    metadata = model_metadata;
  }
  const gguf::File& file = model->file();
  SegmentRequest p{job.device, request_id, {}, {}, {}};
  p.msg.model_hash = identity;
  p.msg.unit_first = static_cast<uint32_t>(job.unit_first);
  p.msg.unit_last = static_cast<uint32_t>(job.unit_last);
  p.msg.n_ctx = static_cast<uint32_t>(opt.n_ctx);
  p.msg.next_endpoint = job.next_endpoint;
  if (job.next_device != 0) p.msg.next_public_key = worker(job.next_device).public_key;
  if (job.upstream_device != 0) p.msg.upstream_public_key = worker(job.upstream_device).public_key;
  p.msg.metadata = std::move(metadata);
  // Tensors the origin's own stages use stay resident; the workers' are dropped from our RSS after use.
  std::set<std::string> named;
  auto add = [&](const std::string& name) -> Expected<bool> {
    if (!named.insert(name).second) return false;  // (a tensor two units share, e.g. tied embeddings)
    const gguf::TensorInfo* t = file.find_tensor(name);
    if (t == nullptr) return make_error(ErrorCode::internal, "tensor " + name + " vanished");
    net::TensorDesc d;
    d.name = t->name;
    d.dtype = t->type;
    d.shape = t->shape;
    d.n_bytes = t->n_bytes;
    {
      std::lock_guard<std::mutex> lock(hash_mu);
      auto it = tensor_hashes.find(name);
      if (it == tensor_hashes.end()) {
        it = tensor_hashes.emplace(name, net::sha256(std::span<const uint8_t>(t->data, t->n_bytes))).first;
        hashed += t->n_bytes;
        if (!origin_tensors.count(name)) (void)file.release_memory(file.data_offset() + t->offset, t->n_bytes);
      }
      d.sha256 = it->second;
    }
    p.msg.tensors.push_back(std::move(d));
    p.infos.push_back(t);
    return true;
  };
  for (const std::string& name : segment_tensor_names(*model, job.unit_first, job.unit_last)) LL_TRY(add(name));
  // Spares: the units next to the segment, nearest first (after, then before), never the embedding
  // (nor, with ring, the head).
  const int n_spare_units = job.spare_units >= 0 ? job.spare_units : std::max(0, opt.spare_units);
  const int64_t U = model->n_units();
  for (int64_t k = 1; k <= n_spare_units; ++k) {
    for (const int64_t u : {job.unit_last + k, job.unit_first - k}) {
      if (u < 1 || u >= U || (opt.ring && u == U - 1)) continue;  // (with ring the head stays here too)
      for (const std::string& name : segment_tensor_names(*model, u, u)) {
        LL_ASSIGN_OR_RETURN(const bool added, add(name));
        if (added) p.spare_unit.push_back(static_cast<int>(u));
      }
    }
  }
  p.msg.n_spare = static_cast<uint32_t>(p.spare_unit.size());
  return p;
}

Expected<TransferStats> Coordinator::Impl::stream_missing(net::Channel& ch, const SegmentRequest& p,
                                                          const std::vector<uint32_t>& which,
                                                          const std::set<std::string>& origin_tensors,
                                                          const std::string& name,
                                                          const std::function<void(const std::string&)>& say) {
  uint64_t total = 0;
  for (uint32_t idx : which) {
    if (idx >= p.infos.size()) {
      return make_error(ErrorCode::parse, name + " asked for tensor " + std::to_string(idx) + " of " +
                                              std::to_string(p.infos.size()));
    }
    total += p.infos[idx]->n_bytes;
  }
  say("sending " + mib(total) + " of weights to " + name);
  uint64_t sent = 0, next_report = 256u << 20;
  const auto t_send = Clock::now();
  for (uint32_t idx : which) {
    const gguf::TensorInfo* t = p.infos[idx];
    for (uint64_t off = 0; off < t->n_bytes; off += k_chunk_bytes) {
      net::TensorChunk chunk;
      chunk.tensor_index = idx;
      chunk.offset = off;
      chunk.total_bytes = t->n_bytes;
      const uint64_t n = std::min<uint64_t>(k_chunk_bytes, t->n_bytes - off);
      chunk.data.assign(t->data + off, t->data + off + n);
      auto ok = ch.send(chunk, p.request_id);
      if (!ok) return make_error(ok.error().code, "sending weights to " + name + ": " + ok.error().message);
      sent += n;
      if (!origin_tensors.count(t->name)) {
        (void)model->file().release_memory(model->file().data_offset() + t->offset + off, n);
      }
      if (sent >= next_report) {
        say("  " + name + ": " + mib(sent) + " / " + mib(total));
        next_report += 256u << 20;
      }
    }
  }
  return TransferStats{sent, ms_since(t_send)};
}

Expected<std::map<int, TransferStats>> Coordinator::Impl::load_segments(const std::vector<SegmentJob>& jobs,
                                                                        const std::set<std::string>& origin_tensors,
                                                                        bool fetch_spares) {
  std::map<int, TransferStats> transfer;
  std::vector<SegmentRequest> pending;
  uint64_t total_hash_bytes = 0;
  for (const SegmentJob& job : jobs) {
    LL_ASSIGN_OR_RETURN(SegmentRequest p, segment_request(job, next_request_id++, origin_tensors, total_hash_bytes));
    pending.push_back(std::move(p));
  }
  if (total_hash_bytes > 0) log("hashed " + mib(total_hash_bytes) + " of weights for the workers");
  for (SegmentRequest& p : pending) {
    WorkerConn& w = worker(p.device);
    uint64_t bytes = 0;
    for (size_t i = 0; i < p.n_segment(); ++i) bytes += p.msg.tensors[i].n_bytes;
    w.weight_bytes = bytes;
    LL_TRY(w.channel->send(p.msg, p.request_id));
  }
  // Collect every status; stream what is missing; wait until all are ready.
  std::set<int> waiting;
  for (const SegmentRequest& p : pending) waiting.insert(p.device);
  std::map<int, const SegmentRequest*> by_device;
  for (const SegmentRequest& p : pending) by_device[p.device] = &p;
  std::map<int, std::set<uint32_t>> not_held;  // per device: spares it declined or was not sent
  while (!waiting.empty()) {
    LL_ASSIGN_OR_RETURN(auto got, recv_any(opt.timeout));
    auto [device, env] = std::move(got);
    auto* st = std::get_if<net::SegmentStatus>(&env.message);
    if (st == nullptr) continue;  // e.g. a late heartbeat answer
    auto pit = by_device.find(device);
    if (pit == by_device.end()) continue;  // (not one we are loading)
    const SegmentRequest& p = *pit->second;
    if (!not_held.count(device)) {  // its answer to LOAD_SEGMENT (later ones: the segment is ready)
      std::set<uint32_t>& skip = not_held[device];
      std::vector<uint32_t> send;
      for (uint32_t idx : st->declined) {
        if (idx < p.n_segment() || idx >= p.infos.size()) {
          return make_error(ErrorCode::parse, device_name(device) + " declined tensor " + std::to_string(idx) +
                                                  ", which is not a spare");
        }
        skip.insert(idx);
      }
      for (uint32_t idx : st->missing) {
        if (idx >= p.infos.size()) {
          return make_error(ErrorCode::parse, device_name(device) + " asked for tensor " + std::to_string(idx) +
                                                  " of " + std::to_string(p.infos.size()));
        }
        if (idx < p.n_segment() && st->state == net::SegmentState::ready) {
          return make_error(ErrorCode::parse, device_name(device) + " is ready without tensor " + p.infos[idx]->name);
        }
        if (idx < p.n_segment() || fetch_spares) {
          send.push_back(idx);
        } else {
          skip.insert(idx);
        }
      }
      if (!send.empty()) {
        LL_ASSIGN_OR_RETURN(transfer[device], stream_missing(*worker(device).channel, p, send, origin_tensors,
                                                             device_name(device), [this](const std::string& m) { log(m); }));
      }
    }
    if (st->state != net::SegmentState::ready) continue;
    waiting.erase(device);
    WorkerConn& w = worker(device);
    w.held = std::make_pair(static_cast<int64_t>(p.msg.unit_first), static_cast<int64_t>(p.msg.unit_last));
    // A spare unit is held when every one of its tensors is.
    std::map<int, bool> whole;
    for (size_t k = 0; k < p.spare_unit.size(); ++k) {
      const bool have = !not_held[device].count(static_cast<uint32_t>(p.n_segment() + k));
      auto [it, fresh] = whole.emplace(p.spare_unit[k], have);
      if (!fresh) it->second = it->second && have;
    }
    w.spare_units.clear();
    for (const auto& [u, have] : whole) {
      if (have) w.spare_units.push_back(u);
    }
    log(device_name(device) + " ready: units " + std::to_string(p.msg.unit_first) + "-" +
        std::to_string(p.msg.unit_last) +
        (whole.empty() ? std::string()
                       : ", " + std::to_string(w.spare_units.size()) + " of " + std::to_string(whole.size()) +
                             " spare units held"));
  }
  return transfer;
}

// -------------------------------------------------------------------------------------- profiling

uint64_t Coordinator::Impl::unit_memory(int device) const {
  constexpr uint64_t k_runtime_reserve = 128u << 20;
  // A budget given for the origin is what its units may take: the user's word, no reserve taken off.
  if (device == 0 && opt.origin_memory_bytes > 0) return std::min(plan::kMaxMemoryBytes, opt.origin_memory_bytes);
  uint64_t mem = available_memory_bytes();
  if (device != 0) {
    const net::Hello& h = workers[static_cast<size_t>(device)].hello;
    mem = h.memory_limit_bytes > 0 ? h.memory_limit_bytes : h.free_memory_bytes;
  }
  return std::min(plan::kMaxMemoryBytes, mem > k_runtime_reserve ? mem - k_runtime_reserve : 0);
}

plan::DeviceProfile Coordinator::Impl::device_row(int device, double block_ms, double head_ms) const {
  plan::DeviceProfile dp;
  dp.name = device_name(device);
  dp.memory_bytes = unit_memory(device);
  const int64_t U = model->n_units();
  for (int64_t u = 0; u < U; ++u) {
    const double ms = u == 0 ? profile_embed_ms : (u == U - 1 ? head_ms : block_ms);
    dp.unit_ms.push_back(std::max(0.0, ms));
  }
  return dp;
}

std::vector<double> Coordinator::batch_factors() const { return impl_->profile_batch_factors; }

Expected<plan::Profile> Coordinator::measure_profile(int n_steps) {
  Impl& c = *impl_;
  poll_joins();
  while (!c.idle_probes.empty()) c.stop_idle_probe(c.idle_probes.begin()->first);
  if (n_steps < 1) return make_error(ErrorCode::invalid_argument, "profiling needs at least one step");
  const model::HParams& hp = c.model->hparams();
  const int64_t E = hp.n_embd, L = hp.n_layer, U = c.model->n_units();
  if (2 * n_steps + kProfileWarmupSteps >= c.opt.n_ctx) {
    return make_error(ErrorCode::invalid_argument, "profiling steps must fit the context");
  }
  const int W = n_workers();
  c.stages.clear();
  c.head_runner.reset();
  c.tail_runner.reset();
  c.log("profiling: loading the last block and the head on every worker");
  std::vector<SegmentJob> jobs;
  for (int w = 1; w <= W; ++w) {
    if (c.lost(w)) continue;
    jobs.push_back(SegmentJob{w, L, L + 1, ""});
    jobs.back().spare_units = 0;  // (the plan decides what each will run; its load brings spares)
  }
  LL_ASSIGN_OR_RETURN(auto transfer, c.load_segments(jobs, {}, false));

  std::vector<float> hidden(static_cast<size_t>(E));
  for (int64_t i = 0; i < E; ++i) hidden[static_cast<size_t>(i)] = 0.01f * static_cast<float>((i * 37) % 101 - 50);
  constexpr int32_t k_probe_seq = 0;
  // The origin, on the same units, in this process.
  LL_ASSIGN_OR_RETURN(auto probe, model::UnitRunner::create(*c.model, L, L + 1, *c.pool, c.opt.n_ctx));
  LL_ASSIGN_OR_RETURN(auto embed, model::UnitRunner::create(*c.model, 0, 0, *c.pool, c.opt.n_ctx));
  std::vector<float> out;
  // Per token over the timed steps: the difference of the runners' running totals.
  auto since = [](const std::vector<model::UnitTiming>& before, const model::UnitTiming& t) {
    for (const auto& b : before) {
      if (b.unit == t.unit && t.n_tokens > b.n_tokens) {
        return (t.compute_ms - b.compute_ms) / static_cast<double>(t.n_tokens - b.n_tokens);
      }
    }
    return 0.0;
  };
  // The probes run one block over and over, so its weights stay in the caches; a stage reads many
  // blocks in turn and streams them from memory. The origin, which has the model, also times as
  // many of the last blocks as its budget would let it hold (at most 1 GiB of them), back to back,
  // right after its probe in each round; the median over the rounds of that rate per block against
  // the probe's scales every device's figures (all devices are assumed to lose the same share to
  // memory: exact for processes on one machine, an estimate across devices).
  const uint64_t block_bytes = std::max<uint64_t>(1, c.model->unit_weight_bytes(L));
  uint64_t budget = c.opt.origin_memory_bytes > 0 ? c.opt.origin_memory_bytes : available_memory_bytes();
  budget = std::min<uint64_t>(budget, uint64_t{1} << 30);
  const uint64_t ends = c.model->unit_weight_bytes(0) + c.model->unit_weight_bytes(L + 1);
  const int64_t n_sweep =
      std::clamp<int64_t>(budget > ends ? static_cast<int64_t>((budget - ends) / block_bytes) : 1, 1, L);
  if (c.opt.hold_weights_in_memory) {  // (timed from memory, as its stages would run them)
    const auto say = [&c](const std::string& s) { c.log(s); };
    (void)hold_units_in_memory(*c.model, 0, 0, say);
    (void)hold_units_in_memory(*c.model, L - n_sweep + 1, L + 1, say);
  }
  std::unique_ptr<model::UnitRunner> sweep;
  if (n_sweep > 1) {
    LL_ASSIGN_OR_RETURN(sweep, model::UnitRunner::create(*c.model, L - n_sweep + 1, L, *c.pool, c.opt.n_ctx));
  }
  std::vector<double> stream_ratios;
  // Rounds of every device in turn; rounds[r][d] is device d's figures in round r.
  const int n_rounds = std::max(1, c.opt.profile_rounds);
  std::vector<std::vector<WorkerProbe>> rounds(static_cast<size_t>(n_rounds));
  std::vector<double> embed_rounds;
  for (int r = 0; r < n_rounds; ++r) {
    std::vector<WorkerProbe>& probes = rounds[static_cast<size_t>(r)];
    probes.resize(static_cast<size_t>(W) + 1);
    for (int w = 1; w <= W; ++w) {
      if (c.lost(w)) continue;  // (dropped by a failover: in no plan)
      // Waits for the answer to request `rid` from this worker, skipping anything else.
      auto await = [&](uint64_t rid) -> Expected<net::Envelope> {
        for (;;) {
          LL_ASSIGN_OR_RETURN(auto got, c.recv_any(c.opt.timeout));
          if (got.first == w && got.second.request_id == rid) return std::move(got.second);
        }
      };
      // (The weights streamed once, before the rounds: each round takes their rate, and probes the
      // link with hidden states only when none streamed.)
      LL_ASSIGN_OR_RETURN(probes[static_cast<size_t>(w)],
                          probe_worker(*c.worker(w).channel, await, c.next_request_id, transfer[w], n_steps, E, L,
                                       c.opt.n_ctx, c.device_name(w)));
      c.log(describe_probe(c.device_name(w), probes[static_cast<size_t>(w)]) +
            (n_rounds > 1 ? " (round " + std::to_string(r + 1) + " of " + std::to_string(n_rounds) + ")" : ""));
    }
    // The origin's own steps, as a worker's (probe_worker): warm-up, n_steps of the block alone
    // (no output wanted: the head is skipped), n_steps of both; so the stream ratio below is taken
    // against the same kind of figure the workers report.
    std::vector<model::UnitTiming> block_before, full_before, embed_before;
    for (int k = 0; k < kProfileWarmupSteps + 2 * n_steps; ++k) {
      if (k == kProfileWarmupSteps) {
        block_before = probe->unit_timings();
        embed_before = embed->unit_timings();
      }
      if (k == kProfileWarmupSteps + n_steps) full_before = probe->unit_timings();
      const bool full = k < kProfileWarmupSteps || k >= kProfileWarmupSteps + n_steps;
      model::BatchToken bt{k_probe_seq, k, k % static_cast<int32_t>(hp.n_vocab), full};
      LL_TRY(probe->forward(std::span<const model::BatchToken>(&bt, 1), hidden.data(), out));
      LL_TRY(embed->forward(std::span<const model::BatchToken>(&bt, 1), nullptr, out));
    }
    probe->release_sequence(k_probe_seq);
    embed->release_sequence(k_probe_seq);
    double full_block_ms = 0, full_head_ms = 0;
    for (const auto& t : probe->unit_timings()) {
      if (t.unit == L) full_block_ms = since(full_before, t);
      if (t.unit == L + 1) full_head_ms = since(full_before, t);
    }
    for (const auto& t : full_before) {
      if (t.unit == L) probes[0].block_ms = since(block_before, t);
    }
    probes[0].full_ms = full_block_ms + full_head_ms;
    probes[0].head_ms = std::max(0.0, probes[0].full_ms - probes[0].block_ms);
    for (const auto& t : embed->unit_timings()) embed_rounds.push_back(since(embed_before, t));
    if (sweep) {
      std::vector<model::UnitTiming> sweep_before;
      for (int k = 0; k < kProfileWarmupSteps + n_steps; ++k) {
        if (k == kProfileWarmupSteps) sweep_before = sweep->unit_timings();
        model::BatchToken bt{k_probe_seq, k, 0, true};
        LL_TRY(sweep->forward(std::span<const model::BatchToken>(&bt, 1), hidden.data(), out));
      }
      sweep->release_sequence(k_probe_seq);
      double total = 0;
      for (const auto& t : sweep->unit_timings()) total += since(sweep_before, t);
      const double streamed_block_ms = total / static_cast<double>(n_sweep);
      if (probes[0].block_ms > 0) stream_ratios.push_back(streamed_block_ms / probes[0].block_ms);
    }
  }
  // Decode batches: steps of b tokens, one from each of b sequences, against steps of one, on the
  // origin's probe block. Same model, same kernels on every device: the ratio stands for all, as
  // the stream ratio below does. (Between 1 and b: outside, it is noise.)
  c.profile_batch_factors = {1.0};
  if (const int max_b = std::min(c.opt.profile_batch_tokens, kMaxProfileBatchTokens); max_b > 1) {
    // Steps of 1, 2, ..., max_b tokens in turn, so that a moment's slowdown of the host falls on all
    // sizes alike; each size's total time over its timed steps.
    std::vector<double> per_step(static_cast<size_t>(max_b), 0.0);
    std::vector<model::BatchToken> batch;
    std::vector<float> in;
    const int32_t first_seq = k_probe_seq + 1;
    for (int k = 0; k < kProfileWarmupSteps + n_steps; ++k) {
      for (int b = 1; b <= max_b; ++b) {
        const auto before = probe->unit_timings();
        batch.clear();
        in.clear();
        // Size b runs sequences first_seq + (b - 1) * b / 2 ...: each size its own, one position per step.
        const int32_t seq0 = first_seq + (b - 1) * b / 2;
        for (int j = 0; j < b; ++j) {
          batch.push_back(model::BatchToken{seq0 + j, k, 0, false});
          in.insert(in.end(), hidden.begin(), hidden.end());
        }
        LL_TRY(probe->forward(batch, in.data(), out));
        if (k < kProfileWarmupSteps) continue;
        for (const auto& t : probe->unit_timings()) {
          if (t.unit == L) per_step[static_cast<size_t>(b) - 1] += since(before, t) * b;  // (since() is per token)
        }
      }
    }
    for (int32_t q = first_seq; q < first_seq + max_b * (max_b + 1) / 2; ++q) probe->release_sequence(q);
    std::string says;
    for (int b = 2; b <= max_b; ++b) {
      const double f = per_step[0] > 0 ? std::clamp(per_step[static_cast<size_t>(b) - 1] / per_step[0], 1.0,
                                                    static_cast<double>(b))
                                       : static_cast<double>(b);
      c.profile_batch_factors.push_back(f);
      says += (b == 2 ? "" : ", ") + std::to_string(f).substr(0, 4) + "x";
    }
    c.log("profiling: a decode step of 2.." + std::to_string(max_b) + " tokens takes " + says +
          " as long as one of a single token (on the origin)");
  }
  // (Never below 1: blocks in turn are not faster than one repeated; a lower figure is noise.)
  const double stream_ratio = stream_ratios.empty() ? 1.0 : std::max(1.0, plan::median_of(stream_ratios));
  // Each figure's median over the rounds (combine_probe_rounds).
  std::vector<WorkerProbe> probes(static_cast<size_t>(W) + 1);
  for (size_t d = 0; d < probes.size(); ++d) {
    std::vector<WorkerProbe> of_d;
    for (const auto& pr : rounds) of_d.push_back(pr[d]);
    probes[d] = combine_probe_rounds(of_d);
  }
  const double embed_ms = plan::median_of(embed_rounds);
  if (n_rounds > 1) {
    for (int w = 1; w <= W; ++w) {
      if (!c.lost(w)) c.log(describe_probe(c.device_name(w), probes[static_cast<size_t>(w)]) + " (median)");
    }
  }
  {
    // An absurd block/head split of a worker (a busy CPU) is replaced by its full step split as the
    // origin's is (fix_odd_split).
    c.profile_head_ratio = probes[0].block_ms > 0 && probes[0].head_ms > 0 ? probes[0].head_ms / probes[0].block_ms : 0;
    for (int w = 1; w <= W; ++w) {
      WorkerProbe& pw = probes[static_cast<size_t>(w)];
      if (!fix_odd_split(pw, c.profile_head_ratio)) continue;
      c.log("profiling " + c.device_name(w) + ": block and head apart are noise (a busy CPU?); split its " +
            std::to_string(pw.full_ms) + " ms step as the origin's: block " + std::to_string(pw.block_ms) +
            " ms/token, head " + std::to_string(pw.head_ms) + " ms/token");
    }

    // Every figure scaled by the origin's ratio of blocks in turn to one block repeated (the rounds).
    c.profile_stream_ratio = stream_ratio;
    if (!stream_ratios.empty()) {
      c.log("profiling: " + std::to_string(n_sweep) + " blocks in turn take " + std::to_string(plan::median_of(stream_ratios)) +
            "x as long as one block repeated (median of the rounds)" +
            (stream_ratio > 1 ? ": every device's figures are scaled" : ": no scaling"));
    }
    if (stream_ratio > 1) {
      for (WorkerProbe& pd : probes) {
        pd.block_ms *= stream_ratio;
        pd.head_ms *= stream_ratio;
      }
    }
  }

  c.profile_embed_ms = embed_ms;

  plan::Profile p;
  const uint64_t kv_per_block = static_cast<uint64_t>(c.opt.n_ctx) * static_cast<uint64_t>(hp.kv_dim()) * 2 * 2;
  for (int64_t u = 0; u < U; ++u) {
    plan::UnitProfile up;
    up.name = c.model->unit_name(u);
    up.memory_bytes = c.model->unit_weight_bytes(u) + (u >= 1 && u <= L ? kv_per_block : 0);
    up.out_bytes = u == U - 1 ? 4.0 : static_cast<double>(E) * 4;
    p.units.push_back(std::move(up));
  }
  for (int d = 0; d <= W; ++d) {
    p.devices.push_back(c.device_row(d, probes[static_cast<size_t>(d)].block_ms, probes[static_cast<size_t>(d)].head_ms));
  }
  const size_t D = static_cast<size_t>(W) + 1;
  p.latency_ms.assign(D, std::vector<double>(D, 0.0));
  p.bandwidth_bytes_per_s.assign(D, std::vector<double>(D, 1e12));
  for (size_t a = 0; a < D; ++a) {
    for (size_t b = 0; b < D; ++b) {
      if (a == b) continue;
      // Workers reach each other through the same network they reach the origin by: a hop between
      // two workers costs both their links' latency, and runs at the slower link's rate.
      p.latency_ms[a][b] = probes[a].link_ms + probes[b].link_ms;
      p.bandwidth_bytes_per_s[a][b] = std::min(probes[a].link_bw, probes[b].link_bw);
    }
  }
  p.origin = 0;
  p.token_bytes = 4;
  LL_TRY(plan::validate(p));
  return p;
}

// ------------------------------------------------------------------------------------ description

std::vector<Transmission> Coordinator::transmission_map(const model::GenerateOptions& gen) const {
  const Impl& c = *impl_;
  std::vector<Transmission> map;
  const int64_t E = c.model->hparams().n_embd;
  const int64_t V = c.model->hparams().n_vocab;
  for (size_t i = 0; i + 1 < c.stages.size(); ++i) {
    map.push_back(Transmission{c.stages[i].device, c.stages[i + 1].device,
                               "hidden state F32 [n_tokens, " + std::to_string(E) + "] after unit " +
                                   std::to_string(c.stages[i].last_unit),
                               static_cast<double>(E) * 4, "every batch"});
  }
  if (c.n_worker_stages() == 0) return map;  // nothing leaves the origin
  if (!c.opt.ring) {
    const int head = c.stages.back().device;
    if (penalty_active(gen.sampling)) {
      map.push_back(Transmission{head, 0, "logits F32 [" + std::to_string(V) + "] (repeat penalty: the origin samples)",
                                 static_cast<double>(V) * 4, "every generated token"});
    } else {
      map.push_back(Transmission{0, c.stages[1].device, "sampling parameters (forwarded to the head)", 0,
                                 "once per sequence"});
      map.push_back(Transmission{head, 0, "token id i32", 4, "every generated token"});
    }
  }
  return map;
}

std::string Coordinator::describe(const model::GenerateOptions& gen) const {
  const Impl& c = *impl_;
  std::string s = "plan (" + std::string(c.opt.ring ? "ring" : "chain") + ", " + format_split(c.stages) + "):\n";
  for (size_t i = 0; i < c.stages.size(); ++i) {
    const Stage& st = c.stages[i];
    uint64_t bytes = 0;
    for (int64_t u = st.first_unit; u <= st.last_unit; ++u) bytes += c.model->unit_weight_bytes(u);
    char line[512];
    std::snprintf(line, sizeof line, "  stage %zu  %-16s units %3d-%-3d (%s .. %s)  %s\n", i,
                  c.device_name(st.device).c_str(), st.first_unit, st.last_unit,
                  c.model->unit_name(st.first_unit).c_str(), c.model->unit_name(st.last_unit).c_str(),
                  mib(bytes).c_str());
    s += line;
  }
  s += c.n_worker_stages() == 0 ? "transmission map: nothing leaves the origin\n" : "transmission map:\n";
  for (const Transmission& t : transmission_map(gen)) {
    char line[512];
    std::snprintf(line, sizeof line, "  %-16s -> %-16s %s, %.0f bytes/token, %s\n", c.device_name(t.from_device).c_str(),
                  c.device_name(t.to_device).c_str(), t.what.c_str(), t.bytes_per_token, t.when.c_str());
    s += line;
  }
  return s;
}

Expected<std::vector<DeviceReport>> Coordinator::devices() {
  Impl& c = *impl_;
  poll_joins();
  std::vector<DeviceReport> out(c.workers.size());
  out[0].name = c.opt.origin_name;
  out[0].address = "local";
  out[0].rss_bytes = current_rss_bytes();
  out[0].peak_rss_bytes = peak_rss_bytes();
  out[0].n_threads = static_cast<uint32_t>(c.opt.n_threads);
  for (const auto* r : {c.head_runner.get(), c.tail_runner.get()}) {
    if (r == nullptr) continue;
    for (const auto& t : r->unit_timings()) out[0].compute_ms += t.compute_ms;
  }
  for (size_t i = 1; i < c.workers.size(); ++i) {
    out[i].name = c.workers[i].hello.name;
    out[i].address = c.workers[i].endpoint;
    out[i].n_threads = c.workers[i].hello.n_threads;
    out[i].cpu_features = c.workers[i].hello.cpu_features;
    out[i].weight_bytes = c.workers[i].weight_bytes;
  }
  for (const Stage& st : c.stages) {
    out[static_cast<size_t>(st.device)].ranges.emplace_back(st.first_unit, st.last_unit);
    if (st.device == 0) {
      for (int64_t u = st.first_unit; u <= st.last_unit; ++u) out[0].weight_bytes += c.model->unit_weight_bytes(u);
    }
  }
  std::map<uint64_t, int> asked;
  for (size_t i = 1; i < c.workers.size(); ++i) {
    if (c.lost(static_cast<int>(i))) continue;  // lost (maybe outside the plan): nothing to ask
    const uint64_t rid = c.next_request_id++;
    LL_TRY(c.workers[i].channel->send(net::StatsRequest{}, rid));
    asked[rid] = static_cast<int>(i);
  }
  const auto deadline = Clock::now() + std::min(c.opt.timeout, net::Millis(30000));
  while (!asked.empty()) {
    // In short waits, so a worker lost meanwhile (in the plan or not) is dropped instead of waited for.
    for (auto a = asked.begin(); a != asked.end();) {
      a = c.lost(a->second) ? asked.erase(a) : std::next(a);
    }
    if (asked.empty()) break;
    if (Clock::now() >= deadline) return make_error(ErrorCode::resource, "no answer from the workers within 30 s");
    auto got_or = c.recv_any(net::Millis(500));
    if (!got_or) {
      if (!c.lost_plan_workers().empty()) continue;  // dropped at the top of the loop
      if (c.opt.should_stop && c.opt.should_stop()) return got_or.error();
      if (got_or.error().code == ErrorCode::resource) continue;  // a quiet 500 ms: the deadline decides
      return got_or.error();
    }
    auto& got = *got_or;
    auto* st = std::get_if<net::Stats>(&got.second.message);
    auto it = asked.find(got.second.request_id);
    if (st == nullptr || it == asked.end()) continue;
    out[static_cast<size_t>(it->second)].rss_bytes = st->rss_bytes;
    out[static_cast<size_t>(it->second)].peak_rss_bytes = st->peak_rss_bytes;
    for (const auto& u : st->units) out[static_cast<size_t>(it->second)].compute_ms += u.compute_ms;
    asked.erase(it);
  }
  return out;
}

// -------------------------------------------------------------------------------------- generation

namespace {

// One request's progress through the pipeline, mirroring model::generate step for step.
struct Sequence {
  size_t index = 0;
  int32_t seq_id = 0;
  const std::vector<int32_t>* prompt = nullptr;
  int64_t n_dispatched = 0;  // prompt tokens sent into the pipeline
  std::vector<int64_t> prefill_sizes;  // micro-batch sizes of the prompt
  size_t n_chunks = 0;                 // micro-batches sent
  int64_t pos = 0;           // next position to fill
  bool in_flight = false;    // a decode token (or the last prefill batch) awaits its output
  bool decode_ready = false; // `next_token` waits to be sent
  int32_t next_token = 0;
  // After a failover: tokens whose KV the new plan's stages must rebuild (positions 0.., no outputs)
  // before `next_token` goes out again; how many of them were sent.
  std::vector<int32_t> replay;
  size_t n_replayed = 0;
  bool done = false;
  const model::GenerateOptions* gen = nullptr;  // the request's own options, or the call's
  const std::function<bool()>* cancelled = nullptr;  // the request's, may be empty
  std::optional<model::Sampler> sampler;  // when the origin samples
  std::vector<int32_t> history;
  std::unique_ptr<model::TextStreamer> streamer;
  model::GenerateResult result;
  Clock::time_point t_start, t_first, t_done;
  std::vector<Clock::time_point> token_times;  // of result.tokens, for RunStats::concurrent_decode_*
};

}  // namespace

Expected<std::vector<model::GenerateResult>> Coordinator::generate(
    const model::Tokenizer& tokenizer, const std::vector<Request>& requests, const model::GenerateOptions& gen,
    int parallel, const std::function<void(size_t, std::string_view)>& on_text) {
  Impl& c = *impl_;
  if (c.stages.empty()) return make_error(ErrorCode::invalid_argument, "generate() before load()");
  if (parallel < 1) return make_error(ErrorCode::invalid_argument, "--parallel must be at least 1");
  const auto t_run = Clock::now();
  const int64_t n_ctx = c.head_runner->n_ctx();
  for (size_t i = 0; i < requests.size(); ++i) {
    const int64_t n = static_cast<int64_t>(requests[i].prompt_tokens.size());
    if (n == 0) return make_error(ErrorCode::invalid_argument, "prompt " + std::to_string(i + 1) + " is empty");
    if (n >= n_ctx) {
      return make_error(ErrorCode::invalid_argument, "prompt " + std::to_string(i + 1) + " has " + std::to_string(n) +
                                                         " tokens, which does not fit a context of " +
                                                         std::to_string(n_ctx));
    }
  }
  const int64_t n_vocab = tokenizer.n_vocab();
  if (c.model->hparams().n_vocab < n_vocab) {
    return make_error(ErrorCode::internal, "model produced fewer logits than the vocabulary size");
  }
  size_t n_worker_stages = c.n_worker_stages();  // (all four change with a failover's new plan)
  bool any_penalty = penalty_active(gen.sampling);
  for (const auto& r : requests) any_penalty = any_penalty || (r.options && penalty_active(r.options->sampling));
  bool origin_samples = c.opt.ring || any_penalty || n_worker_stages == 0;
  // One seed for the run; request i uses seed + i, so a single request reproduces a single-process run.
  const uint64_t base_seed = model::Sampler(gen.sampling).seed();
  const int64_t n_ubatch = std::max<int64_t>(1, c.opt.n_ubatch);
  size_t max_decode_batches = c.max_decode_batches();
  // Batches in flight: prefill micro-batches (and replays) up to one per stage plus one on its way;
  // decode batches up to max_decode_batches, plus one slot they never take, so a request waiting for
  // its prefill is admitted even when more decode batches than stages are allowed.
  const auto in_flight_cap = [&] { return std::max(n_worker_stages, max_decode_batches) + 1; };
  size_t max_in_flight = in_flight_cap();
  size_t n_decode_in_flight = 0;
  size_t max_decode_seen = 0;

  // Prefill micro-batches. Over S stages a prompt cut into micro-batches takes about its time on
  // the slowest stage plus one micro-batch on each of the others (for equal stages: the sum plus
  // (S - 1) times the largest micro-batch, wherever it comes), so over several computing stages
  // they are small and near-equal: n_ubatch tokens at most (32 by default: each micro-batch reads
  // every weight of a stage again, and smaller ones cost more per token in the matmuls). One
  // computing stage overlaps nothing: batches of at least 64.
  // All sizes give the same numbers; only the overlap changes.
  auto prefill_plan = [&](int64_t n_prompt) {
    return prefill_micro_batches(n_prompt, c.n_compute_stages() >= 2 ? n_ubatch : std::max<int64_t>(n_ubatch, 64));
  };
  std::vector<Sequence> seqs(requests.size());
  std::deque<size_t> queued;
  for (size_t i = 0; i < requests.size(); ++i) {
    Sequence& s = seqs[i];
    s.index = i;
    s.seq_id = static_cast<int32_t>(i);
    s.prompt = &requests[i].prompt_tokens;
    s.history = *s.prompt;
    s.gen = requests[i].options ? &*requests[i].options : &gen;
    s.cancelled = &requests[i].cancelled;
    s.streamer = std::make_unique<model::TextStreamer>(s.gen->stop);
    s.result.n_prompt = static_cast<int64_t>(s.prompt->size());
    s.result.seed = requests[i].options ? model::Sampler(s.gen->sampling).seed() : base_seed + i;
    s.prefill_sizes = prefill_plan(s.result.n_prompt);
    queued.push_back(i);
  }
  std::vector<size_t> active;  // admitted, not done
  struct InFlight {
    std::vector<model::BatchToken> tokens;
    bool decode = false;
  };
  std::map<uint64_t, InFlight> in_flight;
  // Tokens sent this monitoring window, prompt (and replay) and decode (MonitorSample::window_prompt_share).
  int64_t window_prompt_tokens = 0, window_decode_tokens = 0;
  std::vector<float> hidden, logits;
  size_t n_done = 0;
  double prefill_ms_per_token = 0;  // the first prompt's, for what replaying tokens costs

  auto finish = [&](Sequence& s, model::StopReason why) -> Expected<void> {
    s.done = true;
    s.t_done = Clock::now();
    s.result.stop_reason = why;
    s.result.decode_ms = ms_since(s.t_first);
    std::string rest = s.streamer->flush();
    if (on_text && !rest.empty()) on_text(s.index, rest);
    s.result.text = s.streamer->text();
    c.head_runner->release_sequence(s.seq_id);
    if (c.tail_runner) c.tail_runner->release_sequence(s.seq_id);
    if (n_worker_stages > 0) {
      LL_TRY(c.worker(c.first_worker_stage().device).channel->send(net::ReleaseSequence{s.seq_id}, c.next_request_id++));
    }
    ++n_done;
    return {};
  };

  // The token a sequence's last batch produced: the same decisions as model::generate.
  auto accept = [&](Sequence& s, int32_t tok) -> Expected<void> {
    const int64_t i = static_cast<int64_t>(s.result.tokens.size());
    const int64_t n_predict = s.gen->n_predict;
    if (n_predict >= 0 && i >= n_predict) return finish(s, model::StopReason::length);
    if (tokenizer.is_eog(tok)) return finish(s, model::StopReason::eog);
    s.result.tokens.push_back(tok);
    s.token_times.push_back(Clock::now());
    s.history.push_back(tok);
    bool stopped = false;
    std::string shown = s.streamer->push(tokenizer.decode_token(tok), stopped);
    if (on_text && !shown.empty()) on_text(s.index, shown);
    if (stopped) return finish(s, model::StopReason::stop_string);
    if (n_predict >= 0 && i + 1 >= n_predict) return finish(s, model::StopReason::length);
    if (*s.cancelled && (*s.cancelled)()) return finish(s, model::StopReason::length);
    if (s.pos >= n_ctx) return finish(s, model::StopReason::context);
    s.decode_ready = true;
    s.next_token = tok;
    return {};
  };

  // Hands the outputs of a finished batch to their sequences: sampled here from logit rows (one per
  // row that wanted output), or token ids a worker sampled. `rows`, when given, are the worker's own
  // account of which tokens they belong to and must match.
  auto deliver = [&](const std::vector<model::BatchToken>& batch, const float* logit_rows,
                     const std::vector<int32_t>& tokens_out, const std::vector<net::TokenMeta>* rows,
                     int device) -> Expected<void> {
    std::vector<const model::BatchToken*> wanted;
    for (const auto& t : batch) {
      if (t.want_output) wanted.push_back(&t);
    }
    for (size_t k = 0; k < wanted.size(); ++k) {
      const model::BatchToken& t = *wanted[k];
      if (rows != nullptr && ((*rows)[k].seq_id != t.seq_id || (*rows)[k].pos != t.pos)) {
        return make_error(ErrorCode::parse, c.device_name(device) + " answered rows of another batch");
      }
      Sequence& s = seqs[static_cast<size_t>(t.seq_id) % seqs.size()];  // (a failover renumbers)
      s.in_flight = false;
      if (s.result.tokens.empty() && s.result.prefill_ms == 0) {
        s.t_first = Clock::now();
        s.result.prefill_ms = std::chrono::duration<double, std::milli>(s.t_first - s.t_start).count();
        if (prefill_ms_per_token == 0) prefill_ms_per_token = s.result.prefill_ms / static_cast<double>(s.result.n_prompt);
      }
      int32_t tok;
      if (logit_rows != nullptr) {
        const int64_t width = c.model->hparams().n_vocab;
        if (!s.sampler) return make_error(ErrorCode::parse, c.device_name(device) + " sent logits where a token was expected");
        tok = s.sampler->sample(logit_rows + k * static_cast<size_t>(width), n_vocab, s.history);
      } else {
        if (k >= tokens_out.size()) return make_error(ErrorCode::parse, c.device_name(device) + " sent too few token ids");
        tok = tokens_out[k];
        if (tok < 0 || tok >= c.model->hparams().n_vocab) {
          return make_error(ErrorCode::parse, c.device_name(device) + " sent token id " + std::to_string(tok) +
                                                  " outside the vocabulary");
        }
      }
      LL_TRY(accept(s, tok));
    }
    std::vector<size_t> still;  // drop finished sequences from the active set
    for (size_t idx : active) {
      if (!seqs[idx].done) still.push_back(idx);
    }
    active.swap(still);
    return {};
  };

  // Runs the origin's first stage on a batch and sends it down the pipeline.
  auto dispatch = [&](std::vector<model::BatchToken> batch, bool decode) -> Expected<void> {
    LL_TRY(c.head_runner->forward(batch, nullptr, hidden));
    if (n_worker_stages == 0) {  // the origin alone (a plan may say so): no network at all
      const float* rows = hidden.data();
      if (c.tail_runner) {
        LL_TRY(c.tail_runner->forward(batch, hidden.data(), logits));
        rows = logits.data();
      }
      return deliver(batch, rows, {}, nullptr, 0);
    }
    net::ActivationBatch ab;
    ab.tokens.reserve(batch.size());
    for (const auto& t : batch) ab.tokens.push_back(net::TokenMeta{t.seq_id, t.pos, t.want_output});
    ab.n_embd = static_cast<uint32_t>(c.model->hparams().n_embd);
    ab.dtype = net::WireDType::f32;
    ab.hidden = std::move(hidden);
    const uint64_t rid = c.next_request_id++;
    auto ok = c.worker(c.first_worker_stage().device).channel->send(ab, rid);
    hidden = std::move(ab.hidden);
    if (!ok) return make_error(ok.error().code, "sending to " + c.device_name(c.first_worker_stage().device) + ": " + ok.error().message);
    (decode ? window_decode_tokens : window_prompt_tokens) += static_cast<int64_t>(batch.size());
    in_flight[rid] = InFlight{std::move(batch), decode};
    if (decode) max_decode_seen = std::max(max_decode_seen, ++n_decode_in_flight);
    return {};
  };

  // Unit timings of every device, taken when the first token appears and at the end (measured ms per
  // stage). Workers answer STATS_REQUEST between results; their answers are collected as they come.
  // Monitoring windows (balancing) take the same snapshots every opt.monitor_interval.
  using Timings = std::map<int64_t, std::pair<uint64_t, double>>;  // unit -> (tokens, compute ms)
  enum class Snap { first, last, monitor };
  std::map<int, Timings> snap_first, snap_last, snap_monitor;
  std::map<int, Timings>& monitor_prev = c.monitor_prev;
  std::map<uint64_t, std::pair<int, Snap>> stats_pending;  // request id -> (device, which snapshot)
  auto snapshot = [&](Snap kind) -> std::map<int, Timings>& {
    return kind == Snap::first ? snap_first : kind == Snap::last ? snap_last : snap_monitor;
  };
  bool snapped_first = false;
  auto origin_timings = [&] {
    Timings t;
    for (const auto* r : {c.head_runner.get(), c.tail_runner.get()}) {
      if (r == nullptr) continue;
      for (const auto& u : r->unit_timings()) t[u.unit] = {u.n_tokens, u.compute_ms};
    }
    return t;
  };
  auto request_snapshot = [&](Snap kind) -> Expected<void> {
    snapshot(kind)[0] = origin_timings();
    std::set<int> asked;
    for (const Stage& st : c.stages) {
      if (st.device == 0 || !asked.insert(st.device).second) continue;
      const uint64_t rid = c.next_request_id++;
      LL_TRY(c.worker(st.device).channel->send(net::StatsRequest{}, rid));
      stats_pending[rid] = {st.device, kind};
    }
    return {};
  };
  auto take_stats = [&](int device, const net::Envelope& env) {
    auto it = stats_pending.find(env.request_id);
    const auto* st = std::get_if<net::Stats>(&env.message);
    if (it == stats_pending.end() || st == nullptr || it->second.first != device) return false;
    Timings& t = snapshot(it->second.second)[device];
    for (const auto& u : st->units) t[u.unit] = {u.n_tokens, u.compute_ms};
    stats_pending.erase(it);
    return true;
  };

  auto start_sampling = [&](Sequence& s) -> Expected<void> {
    if (origin_samples) {  // (also when no worker holds the head)
      if (s.sampler) return {};
      model::SamplingParams p = s.gen->sampling;
      p.seed = s.result.seed;
      s.sampler.emplace(p);
      return {};
    }
    net::Sampling m;
    m.seq_id = s.seq_id;
    const model::SamplingParams& sp = s.gen->sampling;
    m.temperature = std::max(0.0f, sp.temperature);
    m.top_k = std::max(0, sp.top_k);
    // The sampler treats out-of-range values as "off"; the wire only carries the canonical forms.
    m.top_p = std::max(0.0f, sp.top_p);
    m.min_p = std::clamp(sp.min_p, 0.0f, 1.0f);
    m.seed = s.result.seed;
    return c.worker(c.first_worker_stage().device).channel->send(m, c.next_request_id++);
  };

  // Switching plans (a failover's, or the balancer's): load the new plan (which recreates the
  // origin's runners too, so every KV cache is gone), drop the batches in flight (their answers are
  // stale: recv_any skips request ids below stale_below), and give every live sequence new sequence
  // ids (a stale batch still travelling between workers must not touch the new caches) and a replay
  // of its tokens: the prompt again if it had no output yet, else prompt + generated tokens but the
  // last, re-prefilled without outputs, then the last one's decode step again. The kernels are
  // batch-invariant, so the rebuilt caches hold the same numbers and greedy output is unchanged. (A
  // sampler on a worker restarts from its seed: with temperature > 0 the random stream after a
  // switch differs from an undisturbed run.)
  int n_failovers = 0, n_rebalances = 0, n_switches = 0;
  const int64_t n_units = c.model->n_units();
  if (c.unit_ms_estimate.size() != static_cast<size_t>(n_units)) c.unit_ms_estimate.assign(static_cast<size_t>(n_units), std::nan(""));
  std::vector<double>& unit_ms_estimate = c.unit_ms_estimate;
  bool monitor_outstanding = false;  // a monitoring window's STATS are on their way
  // Moving KV caches instead of replaying (a rebalance, where every holder of the old plan is alive):
  // before the new plan loads, each decoding sequence's cache of every block is fetched from its
  // holder (KV_REQUEST; the origin's own runners directly), and once it has loaded, handed to the new
  // holder (KV_DATA, answered KV_STORED) under the sequence's new id. Fetching and storing cost a
  // few bytes per token and block over the links; a replay recomputes every token on the new plan.
  using KvByUnit = std::vector<model::UnitRunner::KvRows>;  // [unit], blocks 1..L filled
  const int64_t n_layer = c.model->hparams().n_layer;
  auto origin_runner = [&](int64_t unit) -> model::UnitRunner* {
    for (auto* r : {c.head_runner.get(), c.tail_runner.get()}) {
      if (r != nullptr && unit >= r->unit_first() && unit <= r->unit_last()) return r;
    }
    return nullptr;
  };
  // Waits for `n` answers of type T to the requests in `rids` (from the device each is mapped to).
  auto collect = [&](std::map<uint64_t, int>& rids, size_t n, auto&& take) -> Expected<void> {
    for (size_t got = 0; got < n;) {
      LL_ASSIGN_OR_RETURN(auto msg, c.recv_any(c.opt.timeout));
      auto it = rids.find(msg.second.request_id);
      if (it == rids.end() || it->second != msg.first) continue;  // (nothing else is in flight)
      LL_TRY(take(msg.second));
      ++got;
    }
    return {};
  };
  // nullopt: the caches could not be fetched (say, a worker that predates KV_REQUEST): replay.
  auto fetch_kv = [&](const std::vector<size_t>& idxs) -> Expected<std::optional<std::map<size_t, KvByUnit>>> {
    std::map<size_t, KvByUnit> out;
    std::map<uint64_t, int> rids;
    std::map<uint64_t, size_t> rid_seq;
    size_t n_expected = 0;
    for (size_t idx : idxs) {
      const Sequence& s = seqs[idx];
      KvByUnit& rows = out[idx];
      rows.resize(static_cast<size_t>(n_units));
      for (const Stage& st : c.stages) {
        const int64_t first = std::max<int64_t>(1, st.first_unit), last = std::min<int64_t>(n_layer, st.last_unit);
        if (first > last) continue;
        if (st.device == 0) {
          for (int64_t u = first; u <= last; ++u) {
            model::UnitRunner* r = origin_runner(u);
            if (r == nullptr) return std::optional<std::map<size_t, KvByUnit>>{};
            auto got = r->export_kv(s.seq_id, u);
            if (!got || got->n_pos != s.pos) return std::optional<std::map<size_t, KvByUnit>>{};
            rows[static_cast<size_t>(u)] = std::move(*got);
          }
          continue;
        }
        net::KvRequest q;
        q.seq_id = s.seq_id;
        q.unit_first = static_cast<uint32_t>(st.first_unit);
        q.unit_last = static_cast<uint32_t>(st.last_unit);
        const uint64_t rid = c.next_request_id++;
        LL_TRY(c.worker(st.device).channel->send(q, rid));
        rids[rid] = st.device;
        rid_seq[rid] = idx;
        n_expected += static_cast<size_t>(last - first + 1);
      }
    }
    auto ok = collect(rids, n_expected, [&](const net::Envelope& env) -> Expected<void> {
      const auto* d = std::get_if<net::KvData>(&env.message);
      const Sequence& s = seqs[rid_seq[env.request_id]];
      if (d == nullptr || d->seq_id != s.seq_id || d->unit < 1 || d->unit > static_cast<uint32_t>(n_layer) ||
          static_cast<int64_t>(d->n_pos) != s.pos || static_cast<int64_t>(d->kv_dim) != c.model->hparams().kv_dim()) {
        return make_error(ErrorCode::parse, "an answer to KV_REQUEST that does not fit the request");
      }
      auto& slot = out[rid_seq[env.request_id]][d->unit];
      slot.n_pos = d->n_pos;
      slot.k = d->k;
      slot.v = d->v;
      return {};
    });
    if (!ok) {
      if (ok.error().code == ErrorCode::io || !c.lost_plan_workers().empty()) return ok.error();
      c.log("rebalance: the KV caches cannot be moved (" + ok.error().message + "); replaying the tokens instead");
      c.stale_below = c.next_request_id;  // (answers still on their way)
      return std::optional<std::map<size_t, KvByUnit>>{};
    }
    for (auto& [idx, rows] : out) {
      for (int64_t u = 1; u <= n_layer; ++u) {
        if (rows[static_cast<size_t>(u)].n_pos != seqs[idx].pos) return std::optional<std::map<size_t, KvByUnit>>{};
      }
    }
    return std::optional<std::map<size_t, KvByUnit>>{std::move(out)};
  };
  // After the new plan loaded and the sequences got their new ids. false: not every cache could be
  // stored (say, a worker's memory limit): the caller replays (which rewrites what was stored).
  auto store_kv = [&](std::map<size_t, KvByUnit>& moved) -> Expected<bool> {
    std::map<uint64_t, int> rids;
    for (auto& [idx, rows] : moved) {
      const Sequence& s = seqs[idx];
      for (const Stage& st : c.stages) {
        const int64_t first = std::max<int64_t>(1, st.first_unit), last = std::min<int64_t>(n_layer, st.last_unit);
        for (int64_t u = first; u <= last; ++u) {
          auto& r = rows[static_cast<size_t>(u)];
          if (st.device == 0) {
            model::UnitRunner* runner = origin_runner(u);
            if (runner == nullptr || !runner->import_kv(s.seq_id, u, r.n_pos, r.k, r.v)) {
              c.stale_below = c.next_request_id;  // (answers to what was sent already)
              return false;
            }
            continue;
          }
          net::KvData d;
          d.seq_id = s.seq_id;
          d.unit = static_cast<uint32_t>(u);
          d.n_pos = static_cast<uint32_t>(r.n_pos);
          d.kv_dim = static_cast<uint32_t>(c.model->hparams().kv_dim());
          d.k = std::move(r.k);
          d.v = std::move(r.v);
          const uint64_t rid = c.next_request_id++;
          LL_TRY(c.worker(st.device).channel->send(d, rid));
          rids[rid] = st.device;
        }
      }
    }
    auto ok = collect(rids, rids.size(), [&](const net::Envelope& env) -> Expected<void> {
      if (std::get_if<net::KvStored>(&env.message) == nullptr) {
        return make_error(ErrorCode::parse, "an answer to KV_DATA that is not KV_STORED");
      }
      return {};
    });
    if (!ok) {
      if (ok.error().code == ErrorCode::io || !c.lost_plan_workers().empty()) return ok.error();
      c.log("rebalance: the KV caches could not all be stored (" + ok.error().message + "); replaying the tokens instead");
      c.stale_below = c.next_request_id;
      return false;
    }
    return true;
  };
  int64_t n_kv_moved_tokens = 0;  // positions moved instead of replayed, over all switches

  auto adopt = [&](const std::vector<Stage>& plan, bool move_kv) -> Expected<void> {
    ++n_switches;
    c.stale_below = c.next_request_id;
    in_flight.clear();
    n_decode_in_flight = 0;
    stats_pending.clear();
    monitor_outstanding = false;
    monitor_prev.clear();
    std::fill(unit_ms_estimate.begin(), unit_ms_estimate.end(), std::nan(""));
    std::optional<std::map<size_t, KvByUnit>> moved;
    if (move_kv) {
      std::vector<size_t> decoding;
      for (size_t idx : active) {
        const Sequence& s = seqs[idx];
        if (!s.done && !s.result.tokens.empty() && s.pos > 0 && !s.in_flight &&
            s.pos + 1 == static_cast<int64_t>(s.history.size())) {
          decoding.push_back(idx);
        }
      }
      if (!decoding.empty()) {
        LL_ASSIGN_OR_RETURN(moved, fetch_kv(decoding));
      }
    }
    LL_TRY(load_plan(plan, false));  // (a switch must not wait for new spares: those held are kept)
    n_worker_stages = c.n_worker_stages();
    origin_samples = c.opt.ring || any_penalty || n_worker_stages == 0;
    max_decode_batches = c.max_decode_batches();
    max_in_flight = in_flight_cap();
    const int32_t n_seqs = static_cast<int32_t>(seqs.size());
    std::vector<size_t> live;  // (a delivery cut short may have left finished ones in `active`)
    for (size_t idx : active) {
      if (!seqs[idx].done) live.push_back(idx);
    }
    active.swap(live);
    for (size_t idx : active) seqs[idx].seq_id = static_cast<int32_t>(seqs[idx].index) + n_switches * n_seqs;
    if (moved) {
      LL_ASSIGN_OR_RETURN(const bool stored, store_kv(*moved));
      if (!stored) moved.reset();
    }
    for (size_t idx : active) {
      Sequence& s = seqs[idx];
      s.in_flight = false;
      if (moved && moved->count(idx)) {  // its caches moved: on with the decode step it was at
        n_kv_moved_tokens += s.pos;
        s.replay.clear();
        s.n_replayed = 0;
        s.next_token = s.history.back();
        s.decode_ready = true;
        if (auto ok = start_sampling(s); !ok) {
          return make_error(ok.error().code, "cannot reach the new plan's first worker: " + ok.error().message);
        }
        continue;
      }
      if (s.result.tokens.empty()) {  // still in its prompt: prefill it again
        s.n_dispatched = 0;
        s.n_chunks = 0;
        s.pos = 0;
        s.decode_ready = false;
        s.prefill_sizes = prefill_plan(s.result.n_prompt);
      } else {
        s.replay.assign(s.history.begin(), s.history.end() - 1);
        s.n_replayed = 0;
        s.pos = static_cast<int64_t>(s.history.size()) - 1;
        s.next_token = s.history.back();
        s.decode_ready = true;
      }
      if (auto ok = start_sampling(s); !ok) {
        return make_error(ok.error().code, "cannot reach the new plan's first worker: " + ok.error().message);
      }
    }
    return {};
  };
  // Failover. A worker of the plan is lost: drop it and switch to a plan over the survivors.
  auto failover = [&](const Error& cause, std::vector<int> lost) -> Expected<void> {
    for (;;) {
      std::string names;
      for (int d : lost) {
        c.worker(d).dead = true;
        c.close_link(d);
        names.append(names.empty() ? "" : ", ").append(c.device_name(d));
      }
      ++n_failovers;
      const std::vector<Stage> old_stages = c.stages;
      const std::string why = names + " stopped answering (" + cause.message + ")";
      if (!c.opt.replan) {
        return make_error(cause.code, why + "; the plan cannot be re-solved without " + names +
                                          " (an explicit --split-units is kept as given)");
      }
      std::vector<int> alive;
      for (int w = 1; w <= static_cast<int>(c.workers.size()) - 1; ++w) {
        if (!c.worker(w).dead) alive.push_back(w);
      }
      auto plan = c.opt.replan(alive);
      if (!plan) {
        return make_error(plan.error().code, why + "; no plan fits the " + std::to_string(alive.size()) +
                                                 " surviving workers: " + plan.error().message);
      }
      c.log(std::string("failover ").append(std::to_string(n_failovers)).append(": dropped ").append(why).append(
          "; old plan: " + c.describe_plan(old_stages) + "; new plan: " + c.describe_plan(*plan)));
      auto switched = adopt(*plan, false);  // (the lost worker's caches are gone: replay)
      if (switched) c.log("failover " + std::to_string(n_failovers) + ": now running " + c.describe_plan(c.stages));
      if (!switched) {
        auto more = c.lost_plan_workers();
        if (more.empty()) {
          return make_error(switched.error().code, why + "; loading the plan over the survivors failed: " +
                                                       switched.error().message);
        }
        lost = std::move(more);  // another worker went while switching: try again without it too
        continue;
      }
      return {};
    }
  };
  // After an error: fail over if a worker of the plan was lost, else the error stands. A failed send
  // or a survivor's complaint that it cannot forward (both ErrorCode::io) may come before the lost
  // connection's monitor event: those get up to opt.loss_grace for the monitors to say so. Other
  // errors (a worker refusing a request, a malformed answer) are final at once.
  auto recover = [&](const Error& e) -> Expected<void> {
    auto lost = c.lost_plan_workers();
    const auto until = Clock::now() + c.opt.loss_grace;
    while (lost.empty() && e.code == ErrorCode::io && n_worker_stages > 0 && Clock::now() < until) {
      if (c.opt.should_stop && c.opt.should_stop()) return e;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      lost = c.lost_plan_workers();
    }
    if (lost.empty()) return e;
    return failover(e, std::move(lost));
  };

  // Balancing. Every monitor_interval the plan's devices report their unit timings (STATS, answered
  // between batches); once all have, the window's ms per token per unit feed a moving estimate and
  // opt.rebalance. A plan it proposes is switched to once the batches in flight have drained.
  std::optional<Rebalance> pending_switch;
  if (c.next_monitor == Clock::time_point{}) c.next_monitor = t_run + c.opt.monitor_interval;
  Clock::time_point& next_monitor = c.next_monitor;  // (a window may be due at once: the last one
                                                     // was in an earlier call)
  auto close_window = [&]() -> Expected<void> {
    monitor_outstanding = false;
    next_monitor = Clock::now() + c.opt.monitor_interval;
    std::vector<double> window_ms(static_cast<size_t>(n_units), std::nan(""));  // this window alone
    for (const Stage& st : c.stages) {
      for (int64_t u = st.first_unit; u <= st.last_unit; ++u) {
        const auto& now = snap_monitor[st.device][u];
        std::pair<uint64_t, double> before{0, 0.0};
        if (auto d = monitor_prev.find(st.device); d != monitor_prev.end()) {
          if (auto b = d->second.find(u); b != d->second.end() && b->second.first <= now.first) before = b->second;
        }
        if (now.first <= before.first) continue;
        const double ms = (now.second - before.second) / static_cast<double>(now.first - before.first);
        window_ms[static_cast<size_t>(u)] = ms;
        double& est = unit_ms_estimate[static_cast<size_t>(u)];
        est = std::isnan(est) ? ms : 0.5 * est + 0.5 * ms;
      }
    }
    monitor_prev = snap_monitor;
    {  // One line per window in the log (--verbose): progress and each device's estimate.
      int64_t n_generated = 0;
      for (const auto& s : seqs) n_generated += static_cast<int64_t>(s.result.tokens.size());
      char head[96];
      std::snprintf(head, sizeof head, "monitor: %.2f s, %lld tokens generated; compute ms/token:", ms_since(t_run) / 1000,
                    static_cast<long long>(n_generated));
      std::string line = head;
      for (const Stage& st : c.stages) {
        double ms = 0;
        for (int64_t u = st.first_unit; u <= st.last_unit; ++u) {
          const double e = unit_ms_estimate[static_cast<size_t>(u)];
          if (!std::isnan(e)) ms += e;
        }
        char part[96];
        std::snprintf(part, sizeof part, " %s %.3f", c.device_name(st.device).c_str(), ms);
        line += part;
      }
      c.log(line);
    }
    MonitorSample m;
    m.elapsed_ms = ms_since(t_run);
    m.steady_ms = std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
    m.stages = c.stages;
    for (int w = 1; w < static_cast<int>(c.workers.size()); ++w) {
      if (!c.worker(w).dead) m.alive_workers.push_back(w);
    }
    m.unit_ms = unit_ms_estimate;
    m.window_unit_ms = std::move(window_ms);
    if (window_prompt_tokens + window_decode_tokens > 0) {
      m.window_prompt_share = static_cast<double>(window_prompt_tokens) /
                              static_cast<double>(window_prompt_tokens + window_decode_tokens);
    }
    // Prompt batches still in flight are computed in the next window: they count there too.
    window_prompt_tokens = window_decode_tokens = 0;
    for (const auto& [rid, f] : in_flight) {
      if (!f.decode) window_prompt_tokens += static_cast<int64_t>(f.tokens.size());
    }
    for (const auto& s : seqs) {
      if (s.done) continue;
      const int64_t made = static_cast<int64_t>(s.result.tokens.size());
      const int64_t n_predict = s.gen->n_predict;
      const int64_t left_ctx = n_ctx - std::max<int64_t>(s.pos, s.result.n_prompt);
      m.remaining_tokens += static_cast<double>(
          std::max<int64_t>(0, n_predict >= 0 ? std::min(n_predict - made, left_ctx) : left_ctx));
      if (s.pos > 0) m.n_replay_tokens += s.pos;
    }
    m.replay_ms_per_token = prefill_ms_per_token;
    m.idle_block_ms = c.collect_idle_probes();
    c.start_idle_probes();
    m.bytes_streamed.assign(c.workers.size(), std::optional<uint64_t>{0});
    m.spare_units.assign(c.workers.size(), {});
    for (int w = 1; w < static_cast<int>(c.workers.size()); ++w) {
      m.bytes_streamed[static_cast<size_t>(w)] = c.worker(w).bytes_streamed;
      m.spare_units[static_cast<size_t>(w)] = c.worker(w).spare_units;
    }
    auto decision = c.opt.rebalance(m);
    if (!decision) {  // the balancer cannot judge (say, a profile that no longer fits): carry on
      c.log("balancing: " + decision.error().message);
      return {};
    }
    if (!decision->note.empty()) c.log("balancing: " + decision->note);
    if (decision->next && decision->next->stages != c.stages) {
      pending_switch = std::move(*decision->next);
      c.log("rebalance " + std::to_string(n_rebalances + 1) + ": " + pending_switch->reason + "; old plan: " +
            c.describe_plan(c.stages) + "; new plan: " + c.describe_plan(pending_switch->stages) +
            " (switching once the batches in flight are done)");
    }
    return {};
  };
  auto monitor = [&]() -> Expected<void> {
    if (!c.opt.rebalance || pending_switch) return {};
    if (!monitor_outstanding) {
      if (Clock::now() < next_monitor) return {};
      LL_TRY(request_snapshot(Snap::monitor));
      monitor_outstanding = true;
    }
    for (const auto& [rid, what] : stats_pending) {
      if (what.second == Snap::monitor) return {};  // answers still to come
    }
    return close_window();
  };

  while (n_done < seqs.size()) {
    // (Waiting for workers checks too; a plan on the origin alone never waits.)
    if (c.opt.should_stop && c.opt.should_stop()) return make_error(ErrorCode::resource, "interrupted");
    poll_joins();  // (workers that joined become part of the cluster between two steps)
    // Admit new sequences.
    while (!queued.empty() && active.size() < static_cast<size_t>(parallel)) {
      Sequence& s = seqs[queued.front()];
      queued.pop_front();
      active.push_back(s.index);
      s.t_start = Clock::now();
      if (auto ok = start_sampling(s); !ok) LL_TRY(recover(ok.error()));  // (a failover restarts it)
    }
    if (auto ok = monitor(); !ok) LL_TRY(recover(ok.error()));
    // A plan the balancer chose: switch once the batches in flight have drained.
    if (pending_switch && in_flight.empty()) {
      Rebalance next = std::move(*pending_switch);
      pending_switch.reset();
      const std::vector<Stage> old_stages = c.stages;
      const int64_t moved_before = n_kv_moved_tokens;
      if (auto ok = adopt(next.stages, true); ok) {
        ++n_rebalances;
        c.log("rebalance " + std::to_string(n_rebalances) + ": now running " + c.describe_plan(c.stages) +
              (n_kv_moved_tokens > moved_before
                   ? "; moved the KV caches of " + std::to_string(n_kv_moved_tokens - moved_before) + " positions"
                   : std::string("; KV caches rebuilt by replay")));
      } else if (!c.lost_plan_workers().empty() || ok.error().code == ErrorCode::io) {
        LL_TRY(recover(ok.error()));  // a worker went: fail over
      } else {
        // A device refused the new plan (say, memory the planner did not know was taken): an
        // optimisation that did not work out must not end the run. Back to the plan that ran.
        c.log("rebalance refused: " + ok.error().message + "; back to " + c.describe_plan(old_stages));
        if (auto back = adopt(old_stages, false); !back) LL_TRY(recover(back.error()));
      }
      continue;
    }
    // Fill the pipeline (not while a switch waits for it to drain). Decode steps first (each holds a sequence up): the tokens that are ready
    // are spread over the decode batches still allowed in flight (so with as many sequences as
    // stages, every stage works on its own sequence; with more, each batch carries several and its
    // weights are read once for all). Then prefill micro-batches, which follow each other through
    // the stages, up to one batch per stage plus one on its way.
    while (!pending_switch) {
      std::vector<model::BatchToken> batch;
      bool is_decode = false;
      if (in_flight.size() < max_in_flight && n_decode_in_flight < max_decode_batches) {
        size_t n_ready = 0;
        auto replaying = [&](const Sequence& s) { return s.n_replayed < s.replay.size(); };
        for (size_t idx : active) n_ready += seqs[idx].decode_ready && !seqs[idx].in_flight && !replaying(seqs[idx]) ? 1 : 0;
        const size_t groups_left = max_decode_batches - n_decode_in_flight;
        const size_t take = std::min<size_t>((n_ready + groups_left - 1) / groups_left, k_max_decode_batch);
        for (size_t idx : active) {
          Sequence& s = seqs[idx];
          if (!s.decode_ready || s.in_flight || replaying(s) || batch.size() >= take) continue;
          batch.push_back(model::BatchToken{s.seq_id, static_cast<int32_t>(s.pos), s.next_token, true});
          s.decode_ready = false;
          s.in_flight = true;
          ++s.pos;
        }
        is_decode = !batch.empty();
      }
      const bool prefill_slot =
          in_flight.size() < max_in_flight && in_flight.size() - n_decode_in_flight < n_worker_stages + 1;
      if (batch.empty() && prefill_slot) {  // a failover's replays first
        for (size_t idx : active) {
          Sequence& s = seqs[idx];
          if (s.done || s.n_replayed >= s.replay.size()) continue;
          const size_t last = std::min(s.replay.size(), s.n_replayed + static_cast<size_t>(n_ubatch));
          for (size_t i = s.n_replayed; i < last; ++i) {
            batch.push_back(model::BatchToken{s.seq_id, static_cast<int32_t>(i), s.replay[i], false});
          }
          s.n_replayed = last;
          break;
        }
      }
      if (batch.empty() && prefill_slot) {
        for (size_t idx : active) {
          Sequence& s = seqs[idx];
          const int64_t n_prompt = static_cast<int64_t>(s.prompt->size());
          if (s.done || s.n_dispatched >= n_prompt) continue;
          const int64_t last = s.n_dispatched + s.prefill_sizes[s.n_chunks++];
          for (int64_t i = s.n_dispatched; i < last; ++i) {
            batch.push_back(model::BatchToken{s.seq_id, static_cast<int32_t>(i), (*s.prompt)[static_cast<size_t>(i)],
                                              i == n_prompt - 1});
          }
          s.n_dispatched = last;
          s.pos = last;
          if (last == n_prompt) s.in_flight = true;
          break;
        }
      }
      if (batch.empty()) break;
      if (auto ok = dispatch(std::move(batch), is_decode); !ok) LL_TRY(recover(ok.error()));
    }
    if (in_flight.empty()) {
      if (n_done < seqs.size() && queued.empty()) {
        return make_error(ErrorCode::internal, "pipeline stalled with nothing in flight");
      }
      continue;
    }
    // Wait for the output of the oldest batches.
    auto received = c.recv_any(c.opt.timeout);
    if (!received) {
      LL_TRY(recover(received.error()));
      continue;
    }
    auto& [device, env] = *received;
    auto* r = std::get_if<net::Result>(&env.message);
    if (r == nullptr) {
      take_stats(device, env);
      continue;
    }
    auto it = in_flight.find(env.request_id);
    if (it == in_flight.end()) {
      return make_error(ErrorCode::parse, c.device_name(device) + " answered an unknown batch " + std::to_string(env.request_id));
    }
    std::vector<model::BatchToken> batch = std::move(it->second.tokens);
    if (it->second.decode) --n_decode_in_flight;
    in_flight.erase(it);
    // Which rows of the batch want output, in order.
    std::vector<const model::BatchToken*> wanted;
    for (const auto& t : batch) {
      if (t.want_output) wanted.push_back(&t);
    }
    std::vector<int32_t> tokens_out;
    const float* logit_rows = nullptr;
    if (r->kind == net::ResultKind::hidden) {
      if (!c.tail_runner || r->tokens.size() != batch.size() ||
          r->width != static_cast<uint32_t>(c.model->hparams().n_embd)) {
        return make_error(ErrorCode::parse, c.device_name(device) + " sent hidden states that do not fit the batch");
      }
      for (size_t i = 0; i < batch.size(); ++i) {
        if (r->tokens[i].seq_id != batch[i].seq_id || r->tokens[i].pos != batch[i].pos) {
          return make_error(ErrorCode::parse, c.device_name(device) + " answered rows of another batch");
        }
      }
      LL_TRY(c.tail_runner->forward(batch, r->values.data(), logits));
      logit_rows = logits.data();
    } else {
      if (r->tokens.size() != wanted.size()) {
        return make_error(ErrorCode::parse, c.device_name(device) + " answered " + std::to_string(r->tokens.size()) +
                                                " rows for a batch with " + std::to_string(wanted.size()) + " outputs");
      }
      if (r->kind == net::ResultKind::logits) {
        if (r->width != static_cast<uint32_t>(c.model->hparams().n_vocab)) {
          return make_error(ErrorCode::parse, c.device_name(device) + " sent logits of the wrong width");
        }
        logit_rows = r->values.data();
      } else {
        tokens_out = r->token_ids;
      }
    }
    if (auto ok = deliver(batch, logit_rows, tokens_out, r->kind == net::ResultKind::hidden ? nullptr : &r->tokens,
                          device);
        !ok) {
      LL_TRY(recover(ok.error()));
      continue;
    }
    if (!snapped_first && !wanted.empty() && n_switches == 0) {
      snapped_first = true;
      if (auto ok = request_snapshot(Snap::first); !ok) LL_TRY(recover(ok.error()));
    }
  }
  // Aggregate decode rate: tokens after each sequence's first, over the span from the first sequence's
  // first token to the last sequence's end (sequences that ran one after another count their sum).
  RunStats st;
  st.n_failovers = n_failovers;
  st.n_rebalances = n_rebalances;
  st.max_decode_batches_in_flight = max_decode_seen;
  if (c.opt.rebalance) {
    st.device_ms_per_token.assign(c.workers.size(), std::nan(""));
    for (const Stage& stage : c.stages) {
      for (int64_t u = stage.first_unit; u <= stage.last_unit; ++u) {
        const double ms = unit_ms_estimate[static_cast<size_t>(u)];
        if (std::isnan(ms)) continue;
        double& d = st.device_ms_per_token[static_cast<size_t>(stage.device)];
        d = std::isnan(d) ? ms : d + ms;
      }
    }
  }
  bool measured = snapped_first && n_switches == 0;  // a switched plan has fresh timings
  if (measured) {
    auto collect = [&]() -> Expected<void> {
      LL_TRY(request_snapshot(Snap::last));
      while (!stats_pending.empty()) {
        LL_ASSIGN_OR_RETURN(auto got, c.recv_any(c.opt.timeout));
        take_stats(got.first, got.second);
      }
      return {};
    };
    if (auto ok = collect(); !ok) {
      // Every sequence is done: a worker lost now costs only the timings.
      if (c.lost_plan_workers().empty()) return ok.error();  // (lost ones are marked dead by now)
      measured = false;
    }
  }
  if (measured) {
    for (const Stage& stage : c.stages) {
      double ms = 0;
      for (int64_t u = stage.first_unit; u <= stage.last_unit; ++u) {
        const auto& a = snap_first[stage.device][u];
        const auto& b = snap_last[stage.device][u];
        if (b.first > a.first) ms += (b.second - a.second) / static_cast<double>(b.first - a.first);
      }
      st.stage_compute_ms_per_token.push_back(ms);
    }
  }
  st.wall_ms = ms_since(t_run);
  std::optional<Clock::time_point> first, last;
  for (const auto& s : seqs) {
    if (s.result.tokens.size() < 2) continue;
    st.n_decode_tokens += static_cast<int64_t>(s.result.tokens.size()) - 1;
    if (!first || s.t_first < *first) first = s.t_first;
    if (!last || s.t_done > *last) last = s.t_done;
  }
  if (first) st.decode_span_ms = std::chrono::duration<double, std::milli>(*last - *first).count();
  std::vector<std::vector<double>> token_ms;
  for (const auto& s : seqs) {
    auto& v = token_ms.emplace_back();
    for (const auto& t : s.token_times) v.push_back(std::chrono::duration<double, std::milli>(t - t_run).count());
  }
  const DecodeOverlap overlap = decode_overlap(token_ms);
  st.concurrent_decode_ms = overlap.ms;
  st.n_concurrent_decode_tokens = overlap.n_tokens;
  c.last_stats = st;
  std::vector<model::GenerateResult> out;
  for (auto& s : seqs) out.push_back(std::move(s.result));
  return out;
}

DecodeOverlap decode_overlap(const std::vector<std::vector<double>>& token_ms) {
  double start = 0, end = 0;
  int n_taking_part = 0;
  for (const auto& v : token_ms) {
    if (v.size() < 2) continue;
    start = n_taking_part == 0 ? v.front() : std::max(start, v.front());
    end = n_taking_part == 0 ? v.back() : std::min(end, v.back());
    ++n_taking_part;
  }
  if (n_taking_part < 2 || end <= start) return {};
  DecodeOverlap o;
  o.ms = end - start;
  for (const auto& v : token_ms) {
    if (v.size() < 2) continue;
    for (double t : v) o.n_tokens += t > start && t <= end ? 1 : 0;
  }
  return o;
}

std::vector<int64_t> prefill_micro_batches(int64_t n_tokens, int64_t max_size) {
  std::vector<int64_t> sizes;
  if (n_tokens <= 0) return sizes;
  max_size = std::max<int64_t>(1, max_size);
  const int64_t n = (n_tokens + max_size - 1) / max_size;
  for (int64_t i = 0; i < n; ++i) sizes.push_back(n_tokens / n + (i < n_tokens % n ? 1 : 0));
  return sizes;
}

}  // namespace ll::runtime
