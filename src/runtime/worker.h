// A worker: the long-running process on one device that runs a segment (a contiguous range of
// units) for the coordinator. It does not need the model file: the coordinator sends the segment's
// tensors, streamed in chunks and checked against their SHA-256; with a cache directory they are kept
// by that hash, so a restart does not fetch them again; with a local model file the worker maps its
// own copy instead, after checking that the coordinator runs the same model.
//
// Message flow (docs/wire-protocol.md):
//   HELLO             answered with the worker's HELLO (name, threads, free memory, limit, CPU features)
//   LOAD_SEGMENT      checked (units, limit, tensors) and answered with SEGMENT_STATUS: ready, or the
//                     tensors still missing; the sender becomes "the coordinator"
//   TENSOR_CHUNK      in order per tensor; when the last missing tensor is verified the segment is
//                     built and SEGMENT_STATUS ready is sent (request id of the LOAD_SEGMENT)
//   ACTIVATION_BATCH  run through the segment; the output goes on as ACTIVATION_BATCH to the next
//                     stage, or back to the coordinator as RESULT (hidden states; or, with the output
//                     head, sampled token ids when a SAMPLING config exists for every row's sequence,
//                     logits otherwise)
//   SAMPLING, RELEASE_SEQUENCE  applied and forwarded to the next stage, so they stay in order with
//                     the batches of their sequence
//   STATS_REQUEST     answered with STATS; HEARTBEAT echoed
// Anything invalid is answered with ERROR and counted; the worker keeps serving.
//
// Memory: the worker keeps its segment's weights and, per sequence, the KV cache of its own layers.
// With a memory limit it refuses (WireError::resource) a segment whose weights plus one full-context
// sequence would not fit, and a new sequence that would not fit next to the ones it holds.
#pragma once

#include <functional>
#include <cstdint>
#include <memory>
#include <string>

#include "core/error.h"
#include "net/protocol.h"
#include "net/transport.h"

namespace ll::runtime {

struct WorkerOptions {
  std::string listen = "tcp://127.0.0.1:0";  // ":0" picks a free port (see Worker::endpoint)
  std::string name;                          // default: "worker-<port>"
  int n_threads = 1;
  uint64_t memory_limit_bytes = 0;  // 0 = none
  std::string cache_dir;            // keep received tensors here, by content hash; empty = no cache
  std::string model_path;           // map tensors from this local GGUF instead of receiving them
  bool quiet = false;               // log errors only (not "ready" lines)
  // CURVE: the same object the Network's Listener accepts clients from (SocketSecurity::
  // authorized_clients). Each LOAD_SEGMENT sets its delegated keys to the segment's
  // upstream_public_key, so that the previous stage may forward to us. Null over plain links.
  std::shared_ptr<net::AuthorizedKeys> authorized_keys;
  net::Limits limits;
  // Installed on every segment the worker builds (model::UnitRunner::set_unit_hook): tests slow a
  // device down with it. Empty: none.
  std::function<void(int64_t unit, int64_t n_tokens)> unit_hook;
  // false: answer KV_REQUEST and KV_DATA as a worker that predates them does (ERROR), so tests can
  // check that the coordinator then rebuilds the caches by replay.
  bool kv_moves = true;
};

struct WorkerCounters {
  uint64_t n_messages = 0;
  uint64_t n_bad_messages = 0;  // invalid frames / payloads and refused requests
  uint64_t n_batches = 0;
  uint64_t n_tokens = 0;
  uint64_t n_tensors_received = 0;
  uint64_t n_tensors_from_cache = 0;
  uint64_t n_tensors_kept = 0;  // reused from the previous segment
};

class Worker {
 public:
  // Binds the listener (and opens the local model, if any). `net` must outlive the worker.
  static Expected<std::unique_ptr<Worker>> create(WorkerOptions options, net::Network& net);
  ~Worker();

  // The resolved endpoint peers connect to ("tcp://127.0.0.1:41234").
  std::string endpoint() const;
  const std::string& name() const;
  // What it says in HELLO (name, threads, free memory, limit, CPU features).
  net::Hello hello() const;

  // Serves until should_stop() returns true (asked at least every 100 ms). Bad peers never end it.
  Expected<void> serve(const std::function<bool()>& should_stop);

  WorkerCounters counters() const;

  struct Impl;

 private:
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Parses "1600MB", "1.5GiB", "800M", "123456" (bytes). Decimal units are powers of 1000, binary of
// 1024; "M"/"G" alone mean MiB/GiB as in most tools' flags.
Expected<uint64_t> parse_byte_size(std::string_view text);

// The memory a worker's buffer for a received tensor of n_bytes occupies, as its --memory-limit
// counts it: whole 2 MiB huge pages, the last one only when the tensor fills over half of it (the
// rest in 4 KiB pages); small tensors in 4 KiB pages.
uint64_t tensor_resident_bytes(uint64_t n_bytes);

}  // namespace ll::runtime
