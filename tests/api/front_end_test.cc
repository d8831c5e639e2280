// The ZeroMQ front end over the in-process engine (the real Scheduler, ModelRunner and Sampler
// on the llama3-bpe fixture), through real sockets on loopback: streamed completions equal to
// transformers' greedy tokens, 100 concurrent requests, cancellation mid-stream with the KV pool
// back to empty, vanished clients, overload, and every bad input answered while other clients
// carry on; the time limits (a deadline, the idle-stream timeout) answering at once and
// cancelling in the engine.
#include "api/front_end.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "api/client.h"
#include "api/local/local_engine.h"
#include "tests/api/test_support.h"

namespace shardserve::api {
namespace {

using namespace std::chrono_literals;

struct Outcome {
  bool accepted = false;
  int deltas = 0;
  std::vector<int32_t> ids;
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::optional<Final> final;
  std::optional<ErrorReply> error;
  bool done() const { return final || error; }
};

// The real in-process engine, with the cancellations the front end asked for recorded (which
// request, which reason), so a test can see a time limit reach the engine; and a replica's
// failure simulated (fail_live: every live request ends kUnavailable with the detail, as
// EngineCore ends them under runtime.on_replica_failure = "abort").
class RecordingEngine final : public Engine {
 public:
  explicit RecordingEngine(Engine& inner) : inner_(inner) {}
  void submit(coordinator::RequestSpec spec) override {
    live_.insert(spec.request_id);
    inner_.submit(std::move(spec));
  }
  bool cancel(std::string_view id, CancelReason reason) override {
    const bool live = inner_.cancel(id, reason);
    std::lock_guard lock(mu_);
    cancels_.push_back({std::string(id), reason, live});
    return live;
  }
  EnginePoll poll(std::chrono::milliseconds wait) override {
    std::string failure;
    {
      std::lock_guard lock(mu_);
      failure = std::exchange(fail_with_, "");
    }
    if (!failure.empty())
      for (const auto& id : live_)
        if (inner_.cancel(id, CancelReason::kClient)) failing_[id] = failure;
    EnginePoll p = inner_.poll(wait);
    for (auto& o : p.outputs) {
      if (!o.finished) continue;
      live_.erase(o.request_id);
      auto it = failing_.find(o.request_id);
      if (it == failing_.end()) continue;
      if (o.finish_reason == coordinator::FinishReason::kCancelled) {
        o.finish_reason = coordinator::FinishReason::kUnavailable;
        o.finish_detail = it->second;
      }
      failing_.erase(it);
    }
    return p;
  }
  // From the test's thread: the engine's next poll ends every live request as unavailable.
  void fail_live(std::string detail) {
    std::lock_guard lock(mu_);
    fail_with_ = std::move(detail);
  }
  bool has_unfinished() const override { return inner_.has_unfinished(); }
  std::vector<ReplicaStatus> status() const override { return inner_.status(); }

  struct Cancel {
    std::string engine_id;  // client hex + ":" + id
    CancelReason reason;
    bool live;
  };
  std::vector<Cancel> cancels() const {
    std::lock_guard lock(mu_);
    return cancels_;
  }

 private:
  Engine& inner_;
  mutable std::mutex mu_;
  std::vector<Cancel> cancels_;
  std::string fail_with_;  // guarded by mu_
  // The engine thread's own.
  std::set<std::string> live_;
  std::map<std::string, std::string> failing_;  // id -> the failure it ends with
};

struct Reference {
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;
  std::string text;
};

class FrontEndTest : public ::testing::Test {
 protected:
  void start(int max_num_seqs = 128, int max_waiting = 256, int kv_blocks = 1024,
             std::chrono::microseconds min_step_time = 0us, double max_request_seconds = 0,
             double stream_idle_timeout_s = 0) {
    LocalEngineOptions eo;
    eo.min_step_time = min_step_time;
    eo.model_dir = testing::fixture("llama3-bpe");
    eo.max_model_len = 512;
    eo.kv_blocks = kv_blocks;
    eo.max_num_seqs = max_num_seqs;
    eo.max_num_batched_tokens = 1024;
    engine_ = std::make_unique<LocalEngine>(eo);
    FrontEndOptions fo;
    fo.endpoint = "tcp://127.0.0.1:*";
    fo.max_waiting = max_waiting;
    fo.probe_interval = 100ms;
    fo.limits.max_request_seconds = max_request_seconds;
    fo.stream_idle_timeout_s = stream_idle_timeout_s;
    front_ = std::make_unique<FrontEnd>(fo, engine_->model_info(), engine_->tokenizer());
    recorder_ = std::make_unique<RecordingEngine>(*engine_);
    engine_thread_ = std::thread([this] { serve(*recorder_, *front_, stop_); });
    const auto ref = testing::read_json(testing::fixture("llama3-bpe/reference.json"));
    for (const auto& p : ref["prompts"])
      refs_.push_back({p["ids"].get<std::vector<int32_t>>(),
                       p["greedy"].get<std::vector<int32_t>>(), p["text"].get<std::string>()});
  }
  void TearDown() override {
    stop_ = true;
    if (engine_thread_.joinable()) engine_thread_.join();
    front_.reset();
    engine_.reset();
  }
  std::unique_ptr<Client> client() { return std::make_unique<Client>(front_->endpoint()); }

  static SubmitRequest greedy(const std::string& id, const std::vector<int32_t>& prompt,
                              int max_tokens) {
    SubmitRequest s;
    s.id = id;
    s.prompt_ids = prompt;
    s.max_tokens = max_tokens;
    s.temperature = 0.0f;
    s.ignore_eos = true;
    return s;
  }

  // Reads until every id in `ids` has its final or error message.
  static std::map<std::string, Outcome> collect(Client& c, const std::vector<std::string>& ids,
                                                std::map<std::string, Outcome> seen = {},
                                                std::chrono::seconds timeout = 60s) {
    auto done = [&] {
      for (const auto& id : ids)
        if (!seen[id].done()) return false;
      return true;
    };
    const auto deadline = Clock::now() + timeout;
    while (!done() && Clock::now() < deadline) {
      auto m = c.receive(200ms);
      if (m) absorb(seen, *m);
    }
    EXPECT_TRUE(done()) << "not every request ended within " << timeout.count() << " s";
    return seen;
  }
  static void absorb(std::map<std::string, Outcome>& seen, const ServerMessage& m) {
    if (auto* a = std::get_if<Accepted>(&m)) seen[a->id].accepted = true;
    if (auto* d = std::get_if<Delta>(&m)) {
      auto& o = seen[d->id];
      ++o.deltas;
      o.ids.insert(o.ids.end(), d->token_ids.begin(), d->token_ids.end());
      o.text += d->text;
      o.logprobs.insert(o.logprobs.end(), d->logprobs.begin(), d->logprobs.end());
    }
    if (auto* f = std::get_if<Final>(&m)) seen[f->id].final = *f;
    if (auto* e = std::get_if<ErrorReply>(&m); e && e->id) seen[*e->id].error = *e;
  }
  StatusReply wait_idle(Client& c, std::chrono::seconds timeout = 20s) {
    const auto deadline = Clock::now() + timeout;
    StatusReply s;
    while (Clock::now() < deadline) {
      s = c.status();
      if (s.live_requests == 0 && s.running == 0 && s.waiting == 0) return s;
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << "still " << s.live_requests << " live requests";
    return s;
  }
  std::string decode(const std::vector<int32_t>& ids) const {
    return engine_->tokenizer()->decode(ids, /*skip_special_tokens=*/true);
  }

  // The engine's cancellations of `id` (any client) for `reason`.
  int cancels_of(const std::string& id, CancelReason reason) const {
    int n = 0;
    for (const auto& c : recorder_->cancels())
      n += c.reason == reason && c.engine_id.size() > id.size() &&
           c.engine_id.compare(c.engine_id.size() - id.size() - 1, std::string::npos,
                               ":" + id) == 0;
    return n;
  }

  std::unique_ptr<LocalEngine> engine_;
  std::unique_ptr<RecordingEngine> recorder_;
  std::unique_ptr<FrontEnd> front_;
  std::thread engine_thread_;
  std::atomic<bool> stop_{false};
  std::vector<Reference> refs_;
};

TEST_F(FrontEndTest, StreamedCompletionIsTransformersGreedy) {
  start();
  auto c = client();
  c->send(greedy("r1", refs_[0].ids, 32));
  auto out = collect(*c, {"r1"})["r1"];
  ASSERT_TRUE(out.final) << (out.error ? out.error->message : "no final");
  EXPECT_TRUE(out.accepted);
  EXPECT_GT(out.deltas, 1);
  EXPECT_EQ(out.ids, refs_[0].greedy);
  EXPECT_EQ(out.text, decode(refs_[0].greedy));
  EXPECT_EQ(out.final->finish_reason, "length");
  EXPECT_EQ(out.final->usage.prompt_tokens, 20);
  EXPECT_EQ(out.final->usage.completion_tokens, 32);
  EXPECT_FALSE(out.final->text.has_value());  // streamed: the deltas carried it
  ASSERT_TRUE(out.final->timings.queue_s && out.final->timings.ttft_s && out.final->timings.tpot_s);
  EXPECT_LE(*out.final->timings.queue_s, *out.final->timings.ttft_s);
  EXPECT_LE(*out.final->timings.ttft_s, out.final->timings.total_s);
}

TEST_F(FrontEndTest, TextPromptNonStreamedWithLogprobsAndStop) {
  start();
  auto c = client();
  // The text prompt tokenizes to the reference ids (BOS added).
  SubmitRequest s = greedy("t", {}, 32);
  s.prompt_ids.reset();
  s.prompt = refs_[0].text;
  s.stream = false;
  s.logprobs = 3;
  c->send(s);
  auto out = collect(*c, {"t"})["t"];
  ASSERT_TRUE(out.final);
  EXPECT_EQ(out.deltas, 0);
  EXPECT_EQ(out.final->usage.prompt_tokens, static_cast<int32_t>(refs_[0].ids.size()));
  EXPECT_EQ(out.final->token_ids, refs_[0].greedy);
  EXPECT_EQ(out.final->text, decode(refs_[0].greedy));
  ASSERT_TRUE(out.final->logprobs);
  ASSERT_EQ(out.final->logprobs->size(), 32u);
  for (std::size_t i = 0; i < 32; ++i) {
    const auto& lp = (*out.final->logprobs)[i];
    EXPECT_EQ(lp.token_id, refs_[0].greedy[i]);
    EXPECT_LE(lp.logprob, 0.0f);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].token_id, lp.token_id);  // greedy: the chosen one is the most likely
  }

  // A stop string taken from the greedy text ends it there, the stop string left out.
  const std::string full = decode(refs_[0].greedy);
  std::string stop;
  for (std::size_t i = 8; i < refs_[0].greedy.size() && stop.empty(); ++i) {
    const std::string piece = decode({refs_[0].greedy[i]});
    if (piece.size() >= 2 && std::all_of(piece.begin(), piece.end(),
                                         [](unsigned char ch) { return ch > 32 && ch < 127; }))
      stop = piece;
  }
  ASSERT_FALSE(stop.empty());
  SubmitRequest st = greedy("s", refs_[0].ids, 32);
  st.stop = {stop};
  c->send(st);
  auto so = collect(*c, {"s"})["s"];
  ASSERT_TRUE(so.final);
  EXPECT_EQ(so.final->finish_reason, "stop");
  EXPECT_EQ(so.final->stop_string, stop);
  EXPECT_EQ(so.text, full.substr(0, full.find(stop)));
}

TEST_F(FrontEndTest, HundredConcurrentRequestsCompleteWithFullOutputs) {
  start();
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 10; ++i) clients.push_back(client());
  std::vector<std::vector<std::string>> ids(10);
  for (int i = 0; i < 100; ++i) {
    const std::string id = "q" + std::to_string(i);
    ids[i % 10].push_back(id);
    clients[i % 10]->send(greedy(id, refs_[i % 4].ids, 32));
  }
  int complete = 0;
  for (int k = 0; k < 10; ++k) {
    auto outs = collect(*clients[k], ids[k]);
    for (const auto& id : ids[k]) {
      const int i = std::stoi(id.substr(1));
      const auto& o = outs[id];
      ASSERT_TRUE(o.final) << id << (o.error ? ": " + o.error->message : "");
      EXPECT_EQ(o.final->finish_reason, "length") << id;
      EXPECT_EQ(o.final->usage.completion_tokens, 32) << id;
      EXPECT_EQ(o.ids, refs_[i % 4].greedy) << id;  // batching does not change a greedy output
      EXPECT_EQ(o.text, decode(refs_[i % 4].greedy)) << id;
      complete += o.ids == refs_[i % 4].greedy;
    }
  }
  EXPECT_EQ(complete, 100);
  const auto s = wait_idle(*clients[0]);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.finished, 100);
}

TEST_F(FrontEndTest, HalfCancelledMidStreamFreeTheirBlocks) {
  start();
  auto c = client();
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    ids.push_back("h" + std::to_string(i));
    c->send(greedy(ids.back(), refs_[i % 4].ids, 300));
  }
  std::map<std::string, Outcome> seen;
  std::set<std::string> cancelled;
  const auto deadline = Clock::now() + 60s;
  while (cancelled.size() < 20 && Clock::now() < deadline) {
    auto m = c->receive(200ms);
    if (!m) continue;
    absorb(seen, *m);
    if (auto* d = std::get_if<Delta>(&*m)) {
      const int i = std::stoi(d->id.substr(1));
      if (i % 2 == 0 && !cancelled.count(d->id)) {
        c->send(CancelRequest{d->id, std::nullopt});
        cancelled.insert(d->id);
      }
    }
  }
  ASSERT_EQ(cancelled.size(), 20u);
  // Mid-stream the pool is in use.
  EXPECT_GT(c->status().kv_blocks_used, 0);
  seen = collect(*c, ids, seen);
  for (const auto& id : ids) {
    const auto& o = seen[id];
    ASSERT_TRUE(o.final) << id;
    if (cancelled.count(id)) {
      EXPECT_EQ(o.final->finish_reason, "cancelled") << id;
      EXPECT_GT(o.final->usage.completion_tokens, 0) << id;
      EXPECT_LT(o.final->usage.completion_tokens, 300) << id;
      EXPECT_EQ(static_cast<int>(o.ids.size()), o.final->usage.completion_tokens) << id;
    } else {
      EXPECT_EQ(o.final->finish_reason, "length") << id;
      EXPECT_EQ(o.ids.size(), 300u) << id;
    }
  }
  const auto s = wait_idle(*c);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.cancelled, 20);
  EXPECT_EQ(s.finished, 20);
  // Cancelling what has ended is an error naming it.
  c->send(CancelRequest{"h0", std::nullopt});
  auto m = c->receive(5s);
  ASSERT_TRUE(m && std::holds_alternative<ErrorReply>(*m));
  EXPECT_EQ(std::get<ErrorReply>(*m).code, ErrorCode::kUnknownRequest);
  EXPECT_EQ(std::get<ErrorReply>(*m).id, "h0");
}

TEST_F(FrontEndTest, VanishedStreamingClientHasItsRequestsCancelled) {
  start();
  auto watcher = client();
  {
    auto c = client();
    std::vector<std::string> ids;
    for (int i = 0; i < 8; ++i) {
      ids.push_back("v" + std::to_string(i));
      c->send(greedy(ids.back(), refs_[i % 4].ids, 400));
    }
    std::set<std::string> streaming;
    const auto deadline = Clock::now() + 30s;
    while (streaming.size() < 8 && Clock::now() < deadline)
      if (auto m = c->receive(200ms); m && std::holds_alternative<Delta>(*m))
        streaming.insert(std::get<Delta>(*m).id);
    ASSERT_EQ(streaming.size(), 8u);
    EXPECT_EQ(watcher->status().live_requests, 8);
  }  // the client's socket closes: it is gone
  const auto s = wait_idle(*watcher);
  EXPECT_EQ(s.disconnect_cancels, 8);
  EXPECT_EQ(s.cancelled, 8);
  EXPECT_EQ(s.kv_blocks_used, 0);
}

TEST_F(FrontEndTest, VanishedQueuedClientIsFoundByTheProbe) {
  start(/*max_num_seqs=*/1, 256, 1024, /*min_step_time=*/2ms);  // "long" streams for about a second
  auto runner = client();
  runner->send(greedy("long", refs_[0].ids, 400));
  std::map<std::string, Outcome> seen;
  while (seen["long"].deltas == 0)
    if (auto m = runner->receive(10s))
      absorb(seen, *m);
    else
      FAIL() << "no delta";
  {
    auto c = client();
    for (int i = 0; i < 3; ++i) c->send(greedy("w" + std::to_string(i), refs_[1].ids, 8));
    const auto deadline = Clock::now() + 10s;
    int accepted = 0;
    while (accepted < 3 && Clock::now() < deadline)
      if (auto m = c->receive(200ms); m && std::holds_alternative<Accepted>(*m)) ++accepted;
    ASSERT_EQ(accepted, 3);
    const auto s = runner->status(true);
    EXPECT_EQ(s.live_requests, 4);
    ASSERT_TRUE(s.requests);
    EXPECT_EQ(std::count_if(s.requests->begin(), s.requests->end(),
                            [](const auto& r) { return r.state == "queued"; }),
              3);
  }  // gone while its requests wait: no delta will find it, the heartbeat probe does
  const auto deadline = Clock::now() + 10s;
  StatusReply s;
  while (Clock::now() < deadline) {
    s = runner->status();
    if (s.disconnect_cancels == 3 && s.live_requests == 1) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(s.disconnect_cancels, 3);
  EXPECT_EQ(s.live_requests, 1);  // found while "long" still runs: none of them was scheduled
  EXPECT_EQ(s.finished, 0);
  runner->send(CancelRequest{"long", std::nullopt});
  auto out = collect(*runner, {"long"}, seen)["long"];
  ASSERT_TRUE(out.final);
  EXPECT_EQ(out.final->finish_reason, "cancelled");
  EXPECT_EQ(wait_idle(*runner).kv_blocks_used, 0);
}

TEST_F(FrontEndTest, OverloadIsAnsweredAtOnce) {
  start(/*max_num_seqs=*/2, /*max_waiting=*/2);
  auto c = client();
  std::vector<std::string> ids;
  const auto sent = Clock::now();
  for (int i = 0; i < 10; ++i) {
    ids.push_back("o" + std::to_string(i));
    c->send(greedy(ids.back(), refs_[0].ids, 400));
  }
  std::map<std::string, Outcome> seen;
  int answered = 0;
  while (answered < 10 && Clock::now() < sent + 10s)
    if (auto m = c->receive(200ms)) {
      absorb(seen, *m);
      answered += std::holds_alternative<Accepted>(*m) || std::holds_alternative<ErrorReply>(*m);
    }
  const double elapsed = std::chrono::duration<double>(Clock::now() - sent).count();
  ASSERT_EQ(answered, 10);
  EXPECT_LT(elapsed, 3.0);  // no waiting for the engine: refused on arrival
  int overloaded = 0;
  for (const auto& id : ids) {
    const auto& o = seen[id];
    if (o.error) {
      EXPECT_EQ(o.error->code, ErrorCode::kOverloaded) << o.error->message;
      EXPECT_TRUE(o.error->retry_after_s.has_value());
      EXPECT_NE(o.error->message.find("at most 4"), std::string::npos) << o.error->message;
      ++overloaded;
    } else {
      EXPECT_TRUE(o.accepted);
      c->send(CancelRequest{id, std::nullopt});
    }
  }
  EXPECT_EQ(overloaded, 6);
  std::vector<std::string> live;
  for (const auto& id : ids)
    if (!seen[id].error) live.push_back(id);
  seen = collect(*c, live, seen);
  const auto s = wait_idle(*c);
  EXPECT_EQ(s.overloaded, 6);
  EXPECT_EQ(s.kv_blocks_used, 0);
}

TEST_F(FrontEndTest, EveryBadInputIsAnsweredAndOthersCarryOn) {
  start();
  auto good = client();
  good->send(greedy("g", refs_[3].ids, 200));
  auto bad = client();
  struct Case {
    std::vector<std::string> frames;
    ErrorCode code;
    std::optional<std::string> id;
    std::string field;
    std::string part;
  };
  const std::string big(5 << 20, 'x');
  const std::vector<Case> cases = {
      {{"{not json"}, ErrorCode::kMalformed, std::nullopt, "", "not valid JSON"},
      {{"a", "b"}, ErrorCode::kMalformed, std::nullopt, "", "got 2 frames"},
      {{big}, ErrorCode::kMalformed, std::nullopt, "", "at most 4194304"},
      {{R"({"v":3,"type":"health"})"}, ErrorCode::kUnsupportedVersion, std::nullopt, "v", "v=3"},
      {{R"({"v":1,"type":"fly"})"},
       ErrorCode::kMalformed,
       std::nullopt,
       "type",
       "unknown message type 'fly'"},
      {{R"({"v":1,"type":"submit","id":"b1","prompt_ids":[1],"colour":"red"})"},
       ErrorCode::kInvalidRequest,
       "b1",
       "colour",
       "unknown field 'colour'"},
      {{R"({"v":1,"type":"submit","id":"b2","prompt_ids":[1],"top_k":"many"})"},
       ErrorCode::kInvalidRequest,
       "b2",
       "top_k",
       "top_k must be an integer, got string"},
      {{R"({"v":1,"type":"submit","id":"b3","prompt":""})"},
       ErrorCode::kInvalidRequest,
       "b3",
       "prompt",
       "prompt is empty"},
      {{R"({"v":1,"type":"submit","id":"b4","prompt_ids":[]})"},
       ErrorCode::kInvalidRequest,
       "b4",
       "prompt_ids",
       "prompt_ids is empty"},
      {{R"({"v":1,"type":"submit","id":"b5","prompt":")" + std::string(3000, 'a') + " " +
        std::string(3000, 'b') + R"("})"},
       ErrorCode::kInvalidRequest,
       "b5",
       "prompt",
       "leaves no room to generate"},
      {{R"({"v":1,"type":"submit","id":"b6","prompt_ids":[1,2],"max_tokens":600})"},
       ErrorCode::kInvalidRequest,
       "b6",
       "max_tokens",
       "exceeds 512 tokens"},
      {{R"({"v":1,"type":"submit","id":"b7","prompt_ids":[1],"temperature":-1})"},
       ErrorCode::kInvalidRequest,
       "b7",
       "temperature",
       "got -1"},
      {{R"({"v":1,"type":"submit","id":"b8","prompt_ids":[1],"top_p":0})"},
       ErrorCode::kInvalidRequest,
       "b8",
       "top_p",
       "(0, 1], got 0"},
      {{R"({"v":1,"type":"submit","id":"b9","prompt_ids":[1],"stop_token_ids":[5000]})"},
       ErrorCode::kInvalidRequest,
       "b9",
       "stop_token_ids[0]",
       "5000 is not a token id"},
      {{R"({"v":1,"type":"submit","id":"b10","messages":[{"role":"dog","content":"x"}]})"},
       ErrorCode::kInvalidRequest,
       "b10",
       "messages[0].role",
       "got \"dog\""},
      {{R"({"v":1,"type":"cancel","id":"nobody"})"},
       ErrorCode::kUnknownRequest,
       "nobody",
       "id",
       "no live request 'nobody' for this client"},
      {{R"({"v":1,"type":"cancel","id":"g","client":"ffff"})"},
       ErrorCode::kUnknownRequest,
       "g",
       "id",
       "of client ffff"},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.frames[0].substr(0, 80));
    bad->send_frames(k.frames);
    auto m = bad->receive(10s);
    ASSERT_TRUE(m.has_value());
    ASSERT_TRUE(std::holds_alternative<ErrorReply>(*m)) << type_name(*m);
    const auto& e = std::get<ErrorReply>(*m);
    EXPECT_EQ(to_string(e.code), to_string(k.code));
    EXPECT_EQ(e.id, k.id);
    EXPECT_EQ(e.field, k.field);
    EXPECT_NE(e.message.find(k.part), std::string::npos) << e.message;
  }
  // A duplicate live id.
  bad->send(greedy("dup", refs_[0].ids, 300));
  bad->send(greedy("dup", refs_[0].ids, 300));
  std::map<std::string, Outcome> seen;
  std::optional<ErrorReply> dup;
  const auto deadline = Clock::now() + 10s;
  while (!dup && Clock::now() < deadline)
    if (auto m = bad->receive(200ms)) {
      if (auto* e = std::get_if<ErrorReply>(&*m)) dup = *e;
      absorb(seen, *m);
    }
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->code, ErrorCode::kDuplicateRequest);
  EXPECT_EQ(dup->field, "id");
  seen["dup"].error.reset();  // the first "dup" is still live
  bad->send(CancelRequest{"dup", std::nullopt});
  seen = collect(*bad, {"dup"}, seen);
  EXPECT_EQ(seen["dup"].final->finish_reason, "cancelled");

  // The well-behaved client's stream went on undisturbed.
  auto out = collect(*good, {"g"})["g"];
  ASSERT_TRUE(out.final);
  EXPECT_EQ(out.ids.size(), 200u);
  EXPECT_EQ(std::vector<int32_t>(out.ids.begin(), out.ids.begin() + 32), refs_[3].greedy);
  const auto s = wait_idle(*good);
  EXPECT_GE(s.invalid, 15);
}

TEST_F(FrontEndTest, ControlMessages) {
  start();
  auto c = client();
  const auto h = c->health();
  EXPECT_EQ(h.status, "ok");
  const auto info = c->model_info();
  EXPECT_EQ(info.name, "llama3-bpe");
  EXPECT_EQ(info.vocab_size, 1000);
  EXPECT_EQ(info.max_model_len, 512);
  EXPECT_EQ(info.chat_format, "llama3");
  EXPECT_TRUE(info.text);
  EXPECT_EQ(info.eos_token_ids, (std::vector<int32_t>{989, 997}));
  const auto s = c->status();
  EXPECT_EQ(s.kv_blocks_total, 1024);
  EXPECT_EQ(s.max_live_requests, 128 + 256);
  EXPECT_TRUE(s.admitting);
  front_->stop_admitting();
  EXPECT_EQ(c->health().status, "draining");
  c->send(greedy("late", refs_[0].ids, 4));
  auto m = c->receive(5s);
  ASSERT_TRUE(m && std::holds_alternative<ErrorReply>(*m));
  EXPECT_EQ(std::get<ErrorReply>(*m).code, ErrorCode::kShuttingDown);
}

TEST_F(FrontEndTest, ChatAndCancelByAnotherClient) {
  start();
  auto owner = client();
  SubmitRequest chat = greedy("chat", {}, 300);
  chat.prompt_ids.reset();
  chat.messages =
      std::vector<ChatMessage>{{"system", "You are terse."}, {"user", "Who created the heaven?"}};
  owner->send(chat);
  std::string owner_hex;
  std::map<std::string, Outcome> seen;
  const auto deadline = Clock::now() + 10s;
  while (owner_hex.empty() && Clock::now() < deadline)
    if (auto m = owner->receive(200ms)) {
      absorb(seen, *m);
      if (auto* a = std::get_if<Accepted>(&*m)) {
        owner_hex = a->client;
        EXPECT_EQ(a->prompt_tokens, 40);  // transformers' rendering of this chat has 40 ids
      }
    }
  ASSERT_FALSE(owner_hex.empty());
  auto admin = client();
  const auto listed = admin->status(true);
  ASSERT_TRUE(listed.requests);
  ASSERT_EQ(listed.requests->size(), 1u);
  EXPECT_EQ((*listed.requests)[0].client, owner_hex);
  admin->send(CancelRequest{"chat", owner_hex});
  auto a = collect(*admin, {"chat"})["chat"];
  ASSERT_TRUE(a.final);
  EXPECT_EQ(a.final->finish_reason, "cancelled");
  auto o = collect(*owner, {"chat"}, seen)["chat"];
  ASSERT_TRUE(o.final);
  EXPECT_EQ(o.final->finish_reason, "cancelled");
}

}  // namespace
}  // namespace shardserve::api

namespace shardserve::api {
namespace {

// A request's own deadline: the final says "timeout" / "deadline" with the tokens it streamed
// (a prefix of the greedy output) and their usage; the engine got the cancel with the deadline
// as its reason and freed its blocks; a request beside it without a deadline is untouched.
TEST_F(FrontEndTest, DeadlinePassedEndsTheRequestWithItsPartialOutput) {
  // 20 ms a step: 400 tokens take at least 8 s, far past the 0.5 s deadline.
  start(128, 256, 1024, /*min_step_time=*/20000us);
  auto c = client();
  SubmitRequest slow = greedy("slow", refs_[0].ids, 400);
  slow.timeout_s = 0.5;
  c->send(slow);
  c->send(greedy("other", refs_[1].ids, 32));
  SubmitRequest whole = greedy("whole", refs_[2].ids, 400);  // not streamed: the text so far
  whole.stream = false;
  whole.timeout_s = 0.5;
  c->send(whole);
  auto seen = collect(*c, {"slow", "other", "whole"});

  const auto& o = seen["slow"];
  ASSERT_TRUE(o.final) << (o.error ? o.error->message : "no final");
  EXPECT_EQ(o.final->finish_reason, "timeout");
  EXPECT_EQ(o.final->finish_detail, "deadline");
  EXPECT_GE(o.final->timings.total_s, 0.5);  // the promise: not before the deadline
  EXPECT_LT(o.final->usage.completion_tokens, 400);
  EXPECT_EQ(o.final->usage.completion_tokens, static_cast<int32_t>(o.ids.size()));
  EXPECT_EQ(o.final->usage.prompt_tokens, static_cast<int32_t>(refs_[0].ids.size()));
  // What was streamed stays valid: the greedy tokens.
  const std::size_t n = std::min(o.ids.size(), refs_[0].greedy.size());
  EXPECT_EQ(std::vector<int32_t>(o.ids.begin(), o.ids.begin() + n),
            std::vector<int32_t>(refs_[0].greedy.begin(), refs_[0].greedy.begin() + n));

  const auto& w = seen["whole"];
  ASSERT_TRUE(w.final);
  EXPECT_EQ(w.final->finish_reason, "timeout");
  ASSERT_TRUE(w.final->token_ids);
  EXPECT_EQ(static_cast<int32_t>(w.final->token_ids->size()), w.final->usage.completion_tokens);
  // The text is what the engine's detokenizer had released when the deadline fell: the whole
  // decode, except that bytes of a character still incomplete at the end stay held back (decode
  // shows them as U+FFFD; the stream never had them).
  ASSERT_TRUE(w.final->text);
  const std::string released = *w.final->text, decoded = decode(*w.final->token_ids);
  ASSERT_EQ(decoded.compare(0, released.size(), released), 0)
      << "text " << released << " is not a prefix of " << decoded;
  std::string held = decoded.substr(released.size());
  while (held.rfind("\xEF\xBF\xBD", 0) == 0) held.erase(0, 3);
  EXPECT_EQ(held, "") << "more than replacement characters held back";

  const auto& other = seen["other"];
  ASSERT_TRUE(other.final);
  EXPECT_EQ(other.final->finish_reason, "length");
  EXPECT_EQ(other.ids, refs_[1].greedy);

  const auto s = wait_idle(*c);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.deadline_timeouts, 2);
  EXPECT_EQ(s.idle_timeouts, 0);
  EXPECT_EQ(s.finished, 1);  // "other"; the timed-out ones are counted apart
  EXPECT_EQ(s.cancelled, 0);
  EXPECT_EQ(cancels_of("slow", CancelReason::kDeadline), 1);
  EXPECT_EQ(cancels_of("whole", CancelReason::kDeadline), 1);
  EXPECT_EQ(cancels_of("other", CancelReason::kDeadline), 0);
  // It has ended: a cancel now is unknown_request.
  c->send(CancelRequest{"slow", std::nullopt});
  auto m = c->receive(5s);
  ASSERT_TRUE(m && std::holds_alternative<ErrorReply>(*m));
  EXPECT_EQ(std::get<ErrorReply>(*m).code, ErrorCode::kUnknownRequest);
}

// The service's limit: the deadline of a submit without timeout_s, and the largest timeout_s.
TEST_F(FrontEndTest, ServiceDeadlineIsTheDefaultAndTheLimit) {
  start(128, 256, 1024, /*min_step_time=*/20000us, /*max_request_seconds=*/0.5);
  auto c = client();
  EXPECT_EQ(c->model_info().max_request_seconds, 0.5);
  SubmitRequest over = greedy("over", refs_[0].ids, 8);
  over.timeout_s = 2.0;
  c->send(over);
  c->send(greedy("default", refs_[0].ids, 400));
  auto seen = collect(*c, {"over", "default"});
  ASSERT_TRUE(seen["over"].error);
  EXPECT_EQ(seen["over"].error->code, ErrorCode::kInvalidRequest);
  EXPECT_EQ(seen["over"].error->field, "timeout_s");
  EXPECT_NE(seen["over"].error->message.find("limits.max_request_seconds"), std::string::npos)
      << seen["over"].error->message;
  ASSERT_TRUE(seen["default"].final);
  EXPECT_EQ(seen["default"].final->finish_reason, "timeout");
  EXPECT_GE(seen["default"].final->timings.total_s, 0.5);
  EXPECT_EQ(wait_idle(*c).kv_blocks_used, 0);
}

TEST_F(FrontEndTest, InvalidTimeoutsAreRefusedNamingTheField) {
  start();
  auto c = client();
  int i = 0;
  for (double bad : {0.0, -1.0, 1e300}) {
    SubmitRequest s = greedy("bad" + std::to_string(i++), refs_[0].ids, 4);
    s.timeout_s = bad;
    c->send(s);
  }
  c->send_frames({R"({"v": 1, "type": "submit", "id": "str", "prompt_ids": [1], "timeout_s": "5"})"});
  auto seen = collect(*c, {"bad0", "bad1", "bad2", "str"});
  for (const auto* id : {"bad0", "bad1", "bad2", "str"}) {
    ASSERT_TRUE(seen[id].error) << id;
    EXPECT_EQ(seen[id].error->code, ErrorCode::kInvalidRequest) << id;
    EXPECT_EQ(seen[id].error->field, "timeout_s") << id;
    EXPECT_NE(seen[id].error->message.find("timeout_s"), std::string::npos)
        << seen[id].error->message;
  }
  EXPECT_NE(seen["bad0"].error->message.find("positive"), std::string::npos);
  EXPECT_NE(seen["bad2"].error->message.find("30 days"), std::string::npos);
  EXPECT_EQ(c->status().live_requests, 0);
}

// A request that gets no output (here: it waits behind a long one, one sequence at a time) is
// ended with error "timeout" naming stream_idle_timeout_s and cancelled in the engine; the one
// streaming steadily is not.
TEST_F(FrontEndTest, IdleStreamTimeoutEndsARequestWithoutOutput) {
  start(/*max_num_seqs=*/1, 256, 1024, /*min_step_time=*/20000us, 0,
        /*stream_idle_timeout_s=*/1.5);
  auto c = client();
  c->send(greedy("runner", refs_[0].ids, 400));  // >= 8 s of 20 ms steps
  std::map<std::string, Outcome> seen;
  while (seen["runner"].ids.empty()) {  // it holds the only running slot
    auto m = c->receive(10s);
    ASSERT_TRUE(m) << "no output from the runner";
    absorb(seen, *m);
  }
  c->send(greedy("starved", refs_[1].ids, 8));
  seen = collect(*c, {"starved"}, seen);
  const auto& st = seen["starved"];
  ASSERT_TRUE(st.error) << "the starved request got a final";
  EXPECT_EQ(st.error->code, ErrorCode::kTimeout);
  EXPECT_NE(st.error->message.find("stream_idle_timeout_s"), std::string::npos)
      << st.error->message;
  EXPECT_TRUE(st.ids.empty());
  // The runner kept streaming and is still live; cancel it to end the test.
  EXPECT_FALSE(seen["runner"].done());
  c->send(CancelRequest{"runner", std::nullopt});
  seen = collect(*c, {"runner"}, seen);
  ASSERT_TRUE(seen["runner"].final);
  EXPECT_EQ(seen["runner"].final->finish_reason, "cancelled");
  const auto s = wait_idle(*c);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.idle_timeouts, 1);
  EXPECT_EQ(s.deadline_timeouts, 0);
  // The answer went out first; the cancel reached the engine (it is idle now, so it has).
  EXPECT_EQ(cancels_of("starved", CancelReason::kStreamIdle), 1);
  EXPECT_EQ(cancels_of("runner", CancelReason::kStreamIdle), 0);
}

// A replica's failure under live requests (the engine ends them kUnavailable): each client gets
// an error "unavailable" naming the failure and the tokens it had — not "rejected", which the
// gateway answers 400 — the streamed one keeping its deltas; counted apart from rejections.
TEST_F(FrontEndTest, AReplicaFailureEndsLiveRequestsUnavailable) {
  start(/*max_num_seqs=*/4, 256, 1024, /*min_step_time=*/20000us);
  auto c = client();
  c->send(greedy("streamed", refs_[0].ids, 400));  // >= 8 s of 20 ms steps
  SubmitRequest whole = greedy("whole", refs_[1].ids, 400);
  whole.stream = false;
  c->send(whole);
  std::map<std::string, Outcome> seen;
  while (seen["streamed"].ids.size() < 3) {
    auto m = c->receive(10s);
    ASSERT_TRUE(m) << "no output from the streamed request";
    absorb(seen, *m);
  }
  const std::string failure =
      "replica 1 (world ranks 3-4): world rank 3 failed: boom (runtime.on_replica_failure = "
      "\"abort\")";
  recorder_->fail_live(failure);
  seen = collect(*c, {"streamed", "whole"}, seen);
  for (const std::string id : {"streamed", "whole"}) {
    const Outcome& o = seen[id];
    ASSERT_TRUE(o.error) << id << " got a final";
    EXPECT_EQ(o.error->code, ErrorCode::kUnavailable) << id;
    EXPECT_EQ(o.error->message.rfind("unavailable: " + failure + "; the request was ended after ", 0),
              0u)
        << o.error->message;
    EXPECT_FALSE(o.error->retry_after_s.has_value());
  }
  // The deltas already sent stay valid: the greedy reference's first tokens, and the error says
  // how many the client had.
  const auto& st = seen["streamed"];
  const std::size_t n = std::min(st.ids.size(), refs_[0].greedy.size());
  EXPECT_EQ(std::vector<int32_t>(st.ids.begin(), st.ids.begin() + n),
            std::vector<int32_t>(refs_[0].greedy.begin(), refs_[0].greedy.begin() + n));
  EXPECT_NE(st.error->message.find(fmt::format("after {} token(s)", st.ids.size())),
            std::string::npos)
      << st.error->message;
  EXPECT_EQ(seen["whole"].deltas, 0);
  const auto s = wait_idle(*c);
  EXPECT_EQ(s.unavailable, 2);
  EXPECT_EQ(s.rejected, 0);
  EXPECT_EQ(s.cancelled, 0);
  EXPECT_EQ(s.kv_blocks_used, 0);
}

}  // namespace
}  // namespace shardserve::api
