#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace shardserve::kernels::cpu {
namespace {

std::vector<float> penalised_logits(const float* logits, int64_t vocab,
                                    const messages::SamplingParams& p,
                                    const PenaltyHistory& h) {
  std::vector<float> out(logits, logits + vocab);
  if (p.repetition_penalty != 1.0f) {
    // CTRL / transformers rule: shrink the logit of every token already present.
    for (int32_t t : h.seen_tokens) {
      float& v = out[t];
      v = v < 0 ? v * p.repetition_penalty : v / p.repetition_penalty;
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    for (auto [t, count] : h.output_counts) {
      out[t] -= p.frequency_penalty * static_cast<float>(count) +
                p.presence_penalty * (count > 0 ? 1.0f : 0.0f);
    }
  }
  return out;
}

int32_t argmax(const std::vector<float>& v) {
  // Lowest id wins ties, as torch.argmax does.
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

std::vector<double> sampling_distribution(const float* logits, int64_t vocab,
                                          const messages::SamplingParams& p,
                                          const PenaltyHistory& h) {
  const std::vector<float> scores = penalised_logits(logits, vocab, p, h);
  std::vector<double> probs(vocab, 0.0);
  if (p.greedy()) {
    probs[argmax(scores)] = 1.0;
    return probs;
  }
  // Candidates in descending order of score (ties by id), after temperature.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
  int64_t keep = vocab;
  if (p.top_k > 0) keep = std::min<int64_t>(keep, p.top_k);
  const double max_scaled = scores[order[0]] / static_cast<double>(p.temperature);
  std::vector<double> weight(keep);
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) {
    weight[i] = std::exp(scores[order[i]] / static_cast<double>(p.temperature) - max_scaled);
    total += weight[i];
  }
  if (p.top_p < 1.0f) {
    // Smallest prefix whose probability reaches top_p (at least one token).
    double cumulative = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cumulative += weight[i] / total;
      if (cumulative >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
  }
  if (p.min_p > 0.0f) {
    // weight[0] is the most likely token's; the ratio is unchanged by renormalisation.
    int64_t cut = 1;
    while (cut < keep && weight[cut] >= p.min_p * weight[0]) ++cut;
    keep = cut;
  }
  double kept_total = 0;
  for (int64_t i = 0; i < keep; ++i) kept_total += weight[i];
  for (int64_t i = 0; i < keep; ++i) probs[order[i]] = weight[i] / kept_total;
  return probs;
}

int32_t sample_from_distribution(std::span<const double> probs, double uniform) {
  // Inverse CDF in id order: deterministic for a given uniform.
  double cumulative = 0;
  int32_t last_nonzero = 0;
  for (std::size_t t = 0; t < probs.size(); ++t) {
    if (probs[t] == 0.0) continue;
    last_nonzero = static_cast<int32_t>(t);
    cumulative += probs[t];
    if (uniform < cumulative) return static_cast<int32_t>(t);
  }
  return last_nonzero;  // rounding left the sum just under the draw
}

Sample sample_token(const float* logits, int64_t vocab, const messages::SamplingParams& p,
                    const PenaltyHistory& h, double uniform) {
  int32_t token = 0;
  if (p.greedy()) {
    token = argmax(penalised_logits(logits, vocab, p, h));
  } else {
    token = sample_from_distribution(sampling_distribution(logits, vocab, p, h), uniform);
  }
  return describe_token(logits, vocab, token, p.logprobs);
}

void add_to_history(PenaltyHistory& h, int32_t token, bool output) {
  if (std::find(h.seen_tokens.begin(), h.seen_tokens.end(), token) == h.seen_tokens.end())
    h.seen_tokens.push_back(token);
  if (!output) return;
  for (auto& [t, count] : h.output_counts) {
    if (t == token) {
      ++count;
      return;
    }
  }
  h.output_counts.emplace_back(token, 1);
}

DraftVerdict verify_draft_token(std::span<const double> target, std::span<const double> draft,
                                int32_t d, double u_accept, double u_resample) {
  const double draft_d = draft.empty() ? 1.0 : draft[d];
  // min(1, target/draft) as "u < target / draft", written without the division so that a
  // zero draft probability (which the draw cannot produce) still behaves: accept iff target > 0.
  if (u_accept * draft_d < target[d]) return {true, d};
  // Residual max(0, target - draft), normalised by its sum. It is not all zero: a rejection
  // needs target(d) < draft(d), and then sum(max(0, target - draft)) = sum(max(0, draft -
  // target)) >= draft(d) - target(d) > 0. Rounding aside; then fall back to the target.
  std::vector<double> residual(target.size());
  double total = 0;
  for (std::size_t t = 0; t < target.size(); ++t) {
    const double q = draft.empty() ? (static_cast<int32_t>(t) == d ? 1.0 : 0.0) : draft[t];
    residual[t] = std::max(0.0, target[t] - q);
    total += residual[t];
  }
  if (!(total > 0)) return {false, sample_from_distribution(target, u_resample)};
  return {false, sample_from_distribution(residual, u_resample * total)};
}

Sample describe_token(const float* logits, int64_t vocab, int32_t token, int32_t num_logprobs) {
  Sample s;
  s.token = token;
  // Raw log-softmax for the reported logprobs.
  const float max_logit = *std::max_element(logits, logits + vocab);
  double denom = 0;
  for (int64_t t = 0; t < vocab; ++t) denom += std::exp(static_cast<double>(logits[t]) - max_logit);
  const double log_denom = std::log(denom) + max_logit;
  s.logprob = static_cast<float>(logits[s.token] - log_denom);
  if (num_logprobs > 0) {
    std::vector<int32_t> ids(vocab);
    std::iota(ids.begin(), ids.end(), 0);
    const int64_t n = std::min<int64_t>(num_logprobs, vocab);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < n; ++i) {
      s.top_ids.push_back(ids[i]);
      s.top_logprobs.push_back(static_cast<float>(logits[ids[i]] - log_denom));
    }
  }
  return s;
}

}  // namespace shardserve::kernels::cpu
