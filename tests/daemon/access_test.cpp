// The broker's access rules: parsing, and the rights they give.
#include "daemon/access.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

using namespace rvoip::events;
using namespace rvoip::events::daemon;

namespace {
Peer user(uid_t uid, gid_t gid = 30000, std::vector<gid_t> groups = {}) { return Peer{uid, gid, std::move(groups)}; }
}  // namespace

TEST_CASE("without a rules file everyone may do everything") {
    AccessRules open;
    CHECK_FALSE(open.enforced());
    CHECK(open.rights(user(12345), "sip.message") == kAll);
    CHECK(open.known(user(12345)));
}

TEST_CASE("rules grant per topic pattern and principal; nothing else is allowed") {
    auto r = AccessRules::parse(R"(
        # transport publishes SIP, media reads it
        sip.*      publish,critical,create   uid:20001
        sip.*      subscribe                 uid:20002 gid:20010
        call.state publish                   uid:20003   # no Critical
        *          subscribe                 uid:20004
    )", "test.acl");
    REQUIRE(r.has_value());
    CHECK(r->enforced());
    CHECK(r->rights(user(20001), "sip.message") == (kPublish | kCritical | kCreate));
    CHECK(r->rights(user(20001), "call.state") == 0);
    CHECK(r->rights(user(20002), "sip.message") == kSubscribe);
    CHECK(r->rights(user(20099, 20010), "sip.message") == kSubscribe);          // primary group
    CHECK(r->rights(user(20099, 1, {7, 20010}), "sip.message") == kSubscribe);  // supplementary group
    CHECK(r->rights(user(20003), "call.state") == kPublish);
    CHECK(r->rights(user(20003), "call.state.x") == 0);  // a pattern matches the whole name
    CHECK(r->rights(user(20004), "anything.at.all") == kSubscribe);
    CHECK(r->rights(user(20005), "sip.message") == 0);
    CHECK_FALSE(r->known(user(20005)));
    CHECK(r->known(user(20003)));
    // root and the broker's own user are never locked out
    CHECK(r->rights(user(0), "sip.message") == kAll);
    CHECK(r->rights(user(::geteuid()), "sip.message") == kAll);
}

TEST_CASE("a lanes line fixes ring sizes for matching topics") {
    auto r = AccessRules::parse("lanes sip.* capacity=1M,2M,4M,4M max_event=64K\nsip.* publish *\n", "t");
    REQUIRE(r.has_value());
    auto l = r->lanes("sip.message");
    REQUIRE(l != nullptr);
    CHECK(l->lanes[0].capacity == 1u << 20);
    CHECK(l->lanes[3].capacity == 4u << 20);
    CHECK(l->lanes[2].max_event == 64u * 1024);
    CHECK_FALSE(l->lanes[2].overflow.has_value());  // a lanes line fixes sizes only
    CHECK(r->lanes("call.state") == nullptr);
    CHECK(r->rights(user(55555), "sip.x") == kPublish);  // * is anyone
}

TEST_CASE("a bad rules file is refused, naming the file, the line and what is wrong") {
    struct Case {
        const char* text;
        const char* says;
    };
    for (auto c : {Case{"sip.* publsh uid:1", "test.acl:1: unknown right 'publsh'"},
                   Case{"\n\nsip.* publish user:no-such-user-here", "test.acl:3: no user named 'no-such-user-here'"},
                   Case{"sip.* publish group:no-such-group-here", "no group named"},
                   Case{"sip.* publish uid:x1", "'uid:x1' is not a number"},
                   Case{"sip.* publish someone", "is not user:NAME"},
                   Case{"sip.* publish", "expected: PATTERN RIGHTS WHO"},
                   Case{"lanes sip.* capacity=lots", "is not a size"},
                   Case{"lanes sip.* colour=red", "unknown lane setting 'colour'"},
                   Case{"lanes sip.* capacity=1M,2M", "takes one value or four"}}) {
        auto r = AccessRules::parse(c.text, "test.acl");
        REQUIRE_FALSE(r.has_value());
        INFO(r.error().what());
        CHECK(r.error().code == Errc::invalid_argument);
        CHECK(r.error().message.find(c.says) != std::string::npos);
    }
    auto missing = AccessRules::load("/nonexistent/rvoip.acl");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().message.find("/nonexistent/rvoip.acl") != std::string::npos);
}

TEST_CASE("user and group names resolve through the system's databases") {
    auto r = AccessRules::parse("media.* subscribe user:nobody group:nogroup\n", "t");
    REQUIRE(r.has_value());
    CHECK(r->rights(user(65534), "media.rtp") == kSubscribe);
}
