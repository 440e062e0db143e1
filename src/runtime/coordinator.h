// The coordinator: lives in the origin process (the device the user talks to), connects to the
// workers, loads a split onto them, and generates text through the resulting pipeline.
//
//   origin  [units 0..a]  --hidden-->  worker 1 [a+1..b]  --hidden-->  ...  worker n [..last]
//      ^                                                                          |
//      +------------- token id (or logits with a repeat penalty) ----------------+
//   ring:  ...  worker n [..c]  --hidden-->  origin [c+1..head]  (tokens and logits stay on the origin)
//
// Pipelining: several sequences are in flight at once (each decode step of a sequence is a batch that
// travels the stages while other sequences' batches occupy the other stages), and a prompt's prefill
// is cut into micro-batches that follow each other through the stages. Every batch gives exactly the
// numbers one process would compute (the kernels are batch- and thread-invariant), so the generated
// tokens are identical to a single-process run with the same options.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "net/protocol.h"
#include "net/transport.h"
#include "plan/profile.h"
#include "runtime/split.h"

namespace ll::runtime {

// What monitoring saw in one window of a generate() call (balancing's input).
struct MonitorSample {
  double elapsed_ms = 0;         // since generate() started
  double steady_ms = 0;          // on the steady clock (comparable across generate() calls)
  std::vector<Stage> stages;     // the running plan
  std::vector<int> alive_workers;  // workers not dropped by a failover (1-based, ascending)
  // [n_units] moving estimate of the compute ms per token of each unit on the device that runs it
  // (from the devices' own unit timings); NaN where no token went through it yet.
  std::vector<double> unit_ms;
  // [n_units] the same for this window alone (NaN where no token went through the unit in it): for
  // a balancer that smooths on its own (plan::SpeedTracker takes a median of windows).
  std::vector<double> window_unit_ms;
  // Share of the tokens sent through the pipeline in this window (and the multi-token batches still
  // in flight from the last one) that were prompt or replay tokens: their micro-batches cost far
  // less per token than decode steps, so a window mostly of them is no measure of decode speed.
  double window_prompt_share = 0;
  double remaining_tokens = 0;      // still to generate, over live and queued sequences
  int64_t n_replay_tokens = 0;      // positions in the live KV caches (a switch moves them; a
                                    // failover, or a switch that cannot move them, replays them)
  double replay_ms_per_token = 0;   // this run's prefill time per token (0: not measured yet)
  // [n_workers + 1] ms per transformer block per token measured since the last window on workers
  // out of the plan (CoordinatorOptions::idle_probe_interval; NaN: none). A device that the plan left
  // because it was slow, or that was profiled on a busy CPU, shows here how fast it is now.
  std::vector<double> idle_block_ms;
  // [n_workers + 1] weight bytes streamed to each worker when its segment was last loaded (0: it
  // maps a local copy or had them cached, so moving units to it costs no transfer; none: never
  // loaded). Entry 0, the origin, is 0.
  std::vector<std::optional<uint64_t>> bytes_streamed;
  // [n_workers + 1] units each worker holds besides its stage (CoordinatorOptions::spare_units):
  // moving them to it sends no weights. Entry 0, the origin (which maps the whole model), is empty.
  std::vector<std::vector<int>> spare_units;
};

// A worker that joined after connect() (a late device of the cluster file, or one that asked to join):
// what probing it measured, in the planner's terms, so a balancer can add it to its profile
// (plan::add_device) and offer it units at the next re-plan.
struct JoinedDevice {
  int device = 0;                 // its number in this cluster (1-based, as the other workers)
  plan::DeviceProfile profile;    // name, memory for units, ms per token of each unit
  double link_latency_ms = 0;     // to the origin, one way
  double link_bandwidth_bytes_per_s = 1e12;
};

struct Rebalance {
  std::vector<Stage> stages;
  std::string reason;
};

// A balancer's answer to one monitoring window: a plan to switch to, or none; and, either way, a
// line for the log saying what it weighed ("running plan 3.1 ms, optimum 1.2 ms: over the margin
// for 0.5 s of 1.5 s").
struct BalanceDecision {
  std::optional<Rebalance> next;
  std::string note;
};

struct CoordinatorOptions {
  bool ring = false;
  int64_t n_ctx = 512;
  int n_threads = 1;                   // for the origin's own stages
  int64_t n_ubatch = 32;               // tokens per prefill micro-batch over several computing stages
  // The origin's own units (and those measure_profile() times on it) held in memory in huge pages
  // (runtime::hold_units_in_memory), the rest given back; false: all stay mapped from the file.
  bool hold_weights_in_memory = true;
  // Decode batches in flight at once (0 = one per stage that computes, so each stage works on its
  // own sequences; the origin's stage counts when it holds blocks or the head, not when it holds
  // only the embedding). Fewer, larger batches read each weight once for more tokens: better when the
  // "devices" share one memory bus, as processes on one machine do.
  int decode_batches = 0;
  net::Millis timeout{120000};         // longest wait for a worker's answer
  net::Millis connect_timeout{10000};  // longest wait for a worker's HELLO
  std::string origin_name = "origin";
  // Memory the origin offers its units in measure_profile() (0: its available memory less a reserve).
  uint64_t origin_memory_bytes = 0;
  // CURVE (net/security.h): one public key per worker endpoint, in the same order; each worker must
  // prove it holds the matching secret key, or connect() fails with "could not authenticate worker".
  // The Network's own key pair is the origin's. Empty: plain links (the Network is not CURVE).
  std::vector<std::string> worker_public_keys;
  // Asked while waiting for workers; returning true aborts the wait (Ctrl-C).
  std::function<bool()> should_stop;
  // Progress and diagnostics ("loading worker-2: 120/300 MiB"); may be empty.
  std::function<void(const std::string&)> log;
  // Failover: when a worker of the plan is lost mid-generation (Link::peer_lost), generate() asks this
  // for a plan over the surviving workers (device numbers as in the cluster, e.g. {1, 3}), loads it
  // and rebuilds every live sequence's KV cache by replaying its tokens. Empty: a lost worker fails
  // the run (an explicit split cannot be re-split).
  std::function<Expected<std::vector<Stage>>(const std::vector<int>& alive_workers)> replan;
  // How long a failed send or forward (which a lost worker causes) waits for the links' monitors to
  // report the loss before the error is final: the transport's heartbeat timeout, and some slack.
  net::Millis loss_grace{net::TransportOptions{}.heartbeat_timeout_ms + 300};
  // Runtime load balancing. Every monitor_interval, generate() asks the plan's devices for their
  // unit timings and hands this a MonitorSample; a plan it returns is switched to between two
  // decode steps: the batches in flight drain, the new plan is loaded (units a worker already holds
  // are not sent again; one with a local model copy maps them), and each live sequence's KV cache
  // is rebuilt by replaying its tokens, so no token is lost, repeated or changed. Empty: no
  // monitoring windows, no balancing.
  std::function<Expected<BalanceDecision>(const MonitorSample&)> rebalance;
  net::Millis monitor_interval{500};
  // With balancing, workers out of the plan that still hold a segment (one they ran before, or the
  // profiling probe) are re-measured this often: single-token steps through the blocks they hold, on
  // a link of their own (no weights move, the pipeline does not wait), reported in
  // MonitorSample::idle_block_ms. 0: never.
  net::Millis idle_probe_interval{5000};
  // Late workers: with this set, connect() does not fail when some workers do not answer HELLO
  // within connect_timeout (as long as one does, and none fails to authenticate): it goes on without
  // them and keeps trying them in the background, as it does for add_worker(). Each that answers is
  // profiled on its own link (the running pipeline is not paused) and becomes a worker of the
  // cluster: in failover re-plans from then on, and in joined() for a balancer.
  bool late_workers = false;
  int join_profile_steps = 8;  // timed steps of each kind when profiling a worker that joins
  // Spare units: each LOAD_SEGMENT also names this many units on each side of the segment (never
  // unit 0), which the worker keeps as its memory allows, so that a switch moving a boundary by up to
  // this many units sends no weights (MonitorSample::spare_units says which each worker holds). They
  // stream with load()'s segments; a switch while generating does not wait for new ones. 0: none.
  int spare_units = 2;
  // measure_profile() times every device this many times, in turn (worker 1, worker 2, ..., the
  // origin, then again), and keeps the median of each figure: a host that slows for a moment (other
  // programs, a CPU quota's period) spoils one round, not the profile.
  int profile_rounds = 3;
  // measure_profile() also times, on the origin, decode steps of 2 up to this many tokens (one from
  // each of as many sequences) against a step of one: batch_factors(), for predicting decode in
  // batches (plan::batched_ms_per_token). 1: not measured. At most kMaxProfileBatchTokens.
  int profile_batch_tokens = 1;
};
inline constexpr int kMaxProfileBatchTokens = 8;

// One device of the running pipeline, for reports (`--json` devices).
struct DeviceReport {
  std::string name;
  std::string address;  // "local" for the origin
  std::vector<std::pair<int64_t, int64_t>> ranges;  // units it runs (the origin has two with ring)
  uint64_t rss_bytes = 0;
  uint64_t peak_rss_bytes = 0;
  uint64_t weight_bytes = 0;
  uint32_t n_threads = 0;
  std::string cpu_features;
  double compute_ms = 0;  // time spent running its units since it loaded them
};

// Which tensor goes from which device to which, derived from the split.
struct Transmission {
  int from_device = 0;  // 0 = origin, i = worker i
  int to_device = 0;
  std::string what;     // "hidden state F32 [n_tokens, 288]", "token id i32", ...
  double bytes_per_token = 0;
  std::string when;     // "every batch", "once per sequence"
};

// Figures of the last generate() call.
struct RunStats {
  double wall_ms = 0;
  double decode_span_ms = 0;    // first sequence's first token to the last sequence's end
  int64_t n_decode_tokens = 0;  // tokens after each sequence's first
  double aggregate_decode_tok_s() const { return decode_span_ms > 0 ? n_decode_tokens * 1000.0 / decode_span_ms : 0; }
  // With several sequences: the time in which every one of them was decoding (the last one's first
  // token to the first one's last), and the tokens they made in it — the rate with all of them in
  // flight, without the ramp in which one still runs its prompt or the tail after one is done.
  // 0 when the sequences' decodes did not overlap (or there was one).
  double concurrent_decode_ms = 0;
  int64_t n_concurrent_decode_tokens = 0;
  double concurrent_decode_tok_s() const {
    return concurrent_decode_ms > 0 ? n_concurrent_decode_tokens * 1000.0 / concurrent_decode_ms : 0;
  }
  // Per stage: compute ms per token its units spent after the first sequence's first token (the
  // decode phase of a single request), from the devices' own unit timings — to set beside the
  // planner's prediction. Empty when there was nothing to measure.
  std::vector<double> stage_compute_ms_per_token;
  size_t max_decode_batches_in_flight = 0;  // most decode batches that were in the pipeline at once
  int n_failovers = 0;   // plans re-solved because a worker was lost (stage timings are then left empty)
  int n_rebalances = 0;  // plans switched by the balancer (stage timings are then left empty)
  // [n_devices] the last monitoring window's moving estimate of each device's compute ms per token
  // over the units it ran (NaN: not measured); empty without balancing.
  std::vector<double> device_ms_per_token;
};

struct Request {
  std::vector<int32_t> prompt_tokens;
  // This request's own limits, sampling and stop strings (an HTTP server batches requests that ask
  // for different ones). Empty: generate()'s `gen`, with seed + i. Given: its seed as is (drawn at
  // random when it is model::kRandomSeed); its seq_id and n_batch are not used.
  std::optional<model::GenerateOptions> options = std::nullopt;
  // Asked after each generated token; true ends the request there (stop reason `length`, the result
  // holding what was generated so far), e.g. when an HTTP client went away. Empty: never.
  std::function<bool()> cancelled = {};
};

// Sizes of the micro-batches a prompt of n_tokens is cut into: as few as fit max_size each, near-equal
// (they differ by at most one token), so that no larger one holds up the stages behind it.
std::vector<int64_t> prefill_micro_batches(int64_t n_tokens, int64_t max_size);

// RunStats::concurrent_decode_*: from each sequence's token times in ms (its first token first;
// sequences with fewer than two tokens take no part), the interval from the latest first token to
// the earliest last token, and the tokens of all sequences after its start and up to its end.
// {0, 0} with fewer than two sequences taking part or no overlap.
struct DecodeOverlap {
  double ms = 0;
  int64_t n_tokens = 0;
};
DecodeOverlap decode_overlap(const std::vector<std::vector<double>>& token_ms);

class Coordinator {
 public:
  // Connects to every worker and exchanges HELLO (fails naming the worker that did not answer).
  // `model` is the origin's full model (mapped; only the pages it uses become resident).
  static Expected<std::unique_ptr<Coordinator>> connect(const model::Model& model, net::Network& net,
                                                        const std::vector<std::string>& worker_endpoints,
                                                        CoordinatorOptions options);
  ~Coordinator();

  int n_workers() const;
  const net::Hello& worker_hello(int worker) const;  // worker = 1..n_workers
  const std::string& worker_endpoint(int worker) const;
  // False once the worker was dropped by a failover (it is then left out of plans and reports).
  bool worker_alive(int worker) const;

  // Membership. add_worker() starts trying to reach a worker at `endpoint` in the background (HELLO,
  // then profiling it); it becomes worker n_workers() + 1 between two steps of generate() (or at the
  // next call that polls: load(), measure_profile(), devices()). Thread-safe (a listener for joining
  // workers calls it from its own thread). `public_key`: its CURVE key, as in worker_public_keys.
  void add_worker(const std::string& endpoint, const std::string& public_key = {});
  // Endpoints still being tried (late, or profiling).
  std::vector<std::string> joining() const;
  // Every worker that joined after connect(), in order (device numbers ascending).
  const std::vector<JoinedDevice>& joined() const;
  // Takes in the workers that finished joining since the last call (generate() calls it between
  // steps); returns how many did.
  int poll_joins();

  // Builds the origin's stages and loads every worker's segment (streaming the tensors they lack).
  Expected<void> load(std::vector<Stage> stages);
  const std::vector<Stage>& stages() const;

  std::vector<Transmission> transmission_map(const model::GenerateOptions& gen) const;
  // Human-readable plan and map (`lingua run --verbose`).
  std::string describe(const model::GenerateOptions& gen) const;

  // Generates every request, at most `parallel` at once (>= 1). on_text(i, text) streams request i's
  // text as it is produced. Results are in request order. Requests cannot join a running call: a
  // server gathers what is queued into the next call.
  Expected<std::vector<model::GenerateResult>> generate(
      const model::Tokenizer& tokenizer, const std::vector<Request>& requests, const model::GenerateOptions& gen,
      int parallel, const std::function<void(size_t, std::string_view)>& on_text = {});

  RunStats last_run_stats() const;

  // Measures a profile for the planner (plan/profile.h) on the live devices: every device (the
  // origin too) runs the model's last block and its head on `n_steps` single-token steps (compute
  // time per token from the device's own unit timings, so the network is not counted); each link's
  // latency is half the fastest of several HEARTBEAT round trips, its bandwidth the rate at which
  // that probe segment's weights streamed. All blocks of a model have the same shapes, so one block
  // stands for all. Memory: a worker's --memory-limit (or free memory) less a runtime reserve.
  // Each figure is the median of CoordinatorOptions::profile_rounds rounds of n_steps timed steps.
  // Unloads any split; call load() afterwards.
  Expected<plan::Profile> measure_profile(int n_steps);
  // From the last measure_profile(): element b - 1 is how much longer a decode step of b tokens
  // takes than one of a single token, for b up to CoordinatorOptions::profile_batch_tokens ({1}
  // when not measured).
  std::vector<double> batch_factors() const;

  // Names, addresses, units and resident memory of every device (asks the workers for STATS).
  Expected<std::vector<DeviceReport>> devices();

  struct Impl;

 private:
  explicit Coordinator(std::unique_ptr<Impl> impl);
  // load(); with `fetch_spares` false (a switch while generating) the workers keep the spares they
  // hold and are sent no new ones, so the switch does not wait for them.
  Expected<void> load_plan(std::vector<Stage> stages, bool fetch_spares);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ll::runtime
