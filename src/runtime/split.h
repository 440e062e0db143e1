// How a model's units are laid out over the origin and the workers: the stages of a pipeline.
//
// Device 0 is always the origin (the process the user talks to); devices 1..n_workers are the
// workers in cluster order. The first stage is the origin's and starts at unit 0 (the embedding), so
// token ids never leave it. With `ring`, the last stage is the origin's too and ends with the output
// head, so logits never leave it either and workers see hidden states only. Between them, worker
// stages; a worker hosts at most one. (A plan may also keep every unit on the origin.) The splits below use every worker once, in
// cluster order; a plan from the planner (`--split optimal`) may use fewer, in any order.
//
//   even     the origin keeps unit 0 (and the head with ring); the transformer blocks are spread
//            evenly over the workers, earlier workers taking the remainder, and without ring the head
//            goes with the last worker (LinguaLinked's baseline split of layers); with more workers
//            than blocks, units are spread instead
//   memory   the same units in proportion to each worker's memory (its --memory-limit, or its free
//            memory), by cumulative share of weight bytes (as llama.cpp's RPC split and exo do)
//   explicit "0-0,1-3,4-6": one range per stage in pipeline order, the origin's first (and last
//            with ring)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "plan/plan.h"

namespace ll::runtime {

using plan::Stage;

// Checks a stage list against the rules above (contiguous non-empty ranges covering every unit).
Expected<void> validate_split(const std::vector<Stage>& stages, int64_t n_units, int n_workers, bool ring);

Expected<std::vector<Stage>> split_even(int64_t n_units, int n_workers, bool ring);
// unit_bytes[u]: weight bytes of unit u; worker_memory[i]: memory of worker i + 1 (> 0).
Expected<std::vector<Stage>> split_memory(const std::vector<uint64_t>& unit_bytes,
                                          const std::vector<uint64_t>& worker_memory, bool ring);
// Parses "a-b,c-d,..." ("a" alone is "a-a") and assigns the ranges to devices 0, 1, 2, ... (with
// ring, the last range to device 0), then validates.
Expected<std::vector<Stage>> parse_split_units(std::string_view text, int64_t n_units, int n_workers,
                                               bool ring);

// "0-0,1-3,4-6"
std::string format_split(const std::vector<Stage>& stages);

}  // namespace ll::runtime
