#include "worker/speculative_executor.h"

#include <chrono>

#include "common/error.h"

namespace shardserve::worker {
namespace {

bool needs_draft_model(const messages::StepPlan& plan) {
  for (const auto& s : plan.seqs)
    if (s.num_draft > 0 && s.draft_source == messages::DraftSource::kDraftModel) return true;
  return false;
}

}  // namespace

StepExecutor::StepExecutor(StepRunner& target, StepRunner* draft, StepExecutorOptions options)
    : target_(target), options_(options) {
  if (draft) {
    require(draft->num_kv_blocks() == target.num_kv_blocks() &&
                draft->block_size() == target.block_size(),
            "speculative: the draft's KV pool ({} blocks of {}) must have the target's geometry "
            "({} blocks of {}) so that the coordinator's block ids are valid for both",
            draft->num_kv_blocks(), draft->block_size(), target.num_kv_blocks(),
            target.block_size());
    require(options_.placement == DraftPlacement::kEveryRank || options_.rank == 0,
            "speculative: with the draft on rank 0 only, rank {} must not hold a draft runner",
            options_.rank);
    proposer_.emplace(*draft);
  }
}

void StepExecutor::broadcast_drafts(messages::StepPlan& plan) {
  std::vector<int32_t> offsets;
  for (const auto& s : plan.seqs) {
    if (s.num_draft <= 0 || s.draft_source != messages::DraftSource::kDraftModel) continue;
    for (int32_t j = 0; j < s.num_draft; ++j)
      offsets.push_back(s.token_offset + s.num_tokens - s.num_draft + j);
  }
  std::vector<float> values(offsets.size());
  for (std::size_t i = 0; i < offsets.size(); ++i)
    values[i] = static_cast<float>(plan.token_ids[offsets[i]]);
  options_.host_group->broadcast(values.data(), static_cast<int64_t>(values.size()), 0);
  for (std::size_t i = 0; i < offsets.size(); ++i)
    plan.token_ids[offsets[i]] = static_cast<int32_t>(values[i]);
}

messages::StepResult StepExecutor::execute(const messages::StepPlan& plan) {
  if (samples()) sampler_.observe(plan);
  if (plan.seqs.empty()) {
    if (proposer_) proposer_->release(plan.released);
    messages::StepResult empty;
    empty.step_id = plan.step_id;
    empty.sample_offsets.push_back(0);
    return empty;
  }
  ++counters_.steps;
  const bool drafts = needs_draft_model(plan);
  const bool rank_zero_draft = options_.placement == DraftPlacement::kRankZero;
  std::optional<DraftProposer::Proposal> proposal;
  if (proposer_) {
    proposal = proposer_->propose(plan, sampler_);
    counters_.draft_passes = proposer_->forward_passes();
    counters_.draft_seconds = proposer_->forward_seconds();
  } else {
    require(!drafts || (rank_zero_draft && options_.rank != 0),
            "step {}: the plan asks for draft-model drafts but this worker has no draft model",
            plan.step_id);
  }
  if (drafts && rank_zero_draft && options_.host_group && options_.host_group->size() > 1) {
    if (!proposal) {  // a rank without the draft: its plan's placeholders come from rank 0
      proposal.emplace();
      proposal->target_plan = plan;
    }
    broadcast_drafts(proposal->target_plan);
  } else {
    require(!drafts || proposer_, "step {}: rank {} has no draft tokens and no group to receive "
            "them from", plan.step_id, options_.rank);
  }
  const messages::StepPlan& target_plan = proposal ? proposal->target_plan : plan;

  // Where the step is sampled: Sampler::sampling_site decides (and says why some steps stay on
  // the host). A rank that does not sample takes the logits path and discards them.
  const SamplingSite site =
      samples() ? Sampler::sampling_site(target_plan, target_.samples_on_device(),
                                         proposal.has_value())
                : SamplingSite::kHost;
  // Host work of the sampler, outside the timed forward pass as sample() is.
  const DeviceSamplingInputs sampling_inputs =
      site == SamplingSite::kDevice ? sampler_.device_inputs(target_plan) : DeviceSamplingInputs{};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<DeviceSample> device_rows;
  StepLogits logits;
  switch (site) {
    case SamplingSite::kDeviceGreedy: device_rows = target_.forward_greedy(target_plan); break;
    case SamplingSite::kDevice:
      device_rows = target_.forward_sampled(target_plan, sampling_inputs);
      break;
    case SamplingSite::kHost: logits = target_.forward(target_plan); break;
  }
  counters_.target_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++counters_.target_passes;
  if (site != SamplingSite::kHost) return sampler_.from_device_rows(target_plan, device_rows);

  if (!samples()) {
    messages::StepResult empty;
    empty.step_id = plan.step_id;
    empty.sample_offsets.push_back(0);
    return empty;
  }
  VerifyCounts counts;
  messages::StepResult result = sampler_.sample(
      target_plan, logits, proposal ? &proposal->distributions : nullptr, &counts);
  counters_.verify_sequences += counts.sequences;
  counters_.proposed_tokens += counts.proposed;
  counters_.accepted_tokens += counts.accepted;
  counters_.all_accepted += counts.all_accepted;
  if (proposer_) proposer_->on_result(target_plan, result);
  return result;
}

}  // namespace shardserve::worker
