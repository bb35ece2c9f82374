#include "agent/chat.hpp"

#include <termios.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <iostream>
#include <sstream>

#include "agent/line_editor.hpp"

namespace ma::agent {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr const char* help_text =
    "commands: /to NAME TEXT, /all TEXT, /group NAME TEXT, /users, /groups, /create GROUP [MEMBER...], "
    "/join GROUP, /leave GROUP, /help, /quit; a plain line goes to the last correspondent; "
    "arrows, Home/End and Ctrl-A/E/U/K/W edit, Up/Down recall";

// The terminal in non-canonical mode without echo, restored on destruction.
class raw_terminal {
 public:
  raw_terminal() {
    if (!::isatty(STDIN_FILENO) || ::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~raw_terminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  bool active() const { return active_; }

 private:
  termios saved_{};
  bool active_ = false;
};

struct chat_state {
  client& c;
  bool tty;
  line_editor editor;
  std::string correspondent;
  // A direct message that arrived while a line was half typed: its sender becomes the
  // correspondent once that line is done, so that the line goes where its prompt said.
  std::string next_correspondent;
  bool connected = true;
  bool quit = false;
  boost::asio::posix::stream_descriptor* input = nullptr;  // the terminal, while read_input reads it

  std::string prompt() const { return (correspondent.empty() ? std::string() : "to " + correspondent) + "> "; }

  void redraw() {
    if (tty) std::cout << editor.render(prompt()) << std::flush;
  }
  // Prints a line above the one being typed, and redraws that.
  void print(const std::string& line) {
    if (tty) {
      std::cout << "\r\033[K" << line << "\n" << editor.render(prompt()) << std::flush;
    } else {
      std::cout << line << "\n" << std::flush;
    }
  }
  void heard_from(const std::string& sender) {
    if (editor.text().empty()) {
      correspondent = sender;
      next_correspondent.clear();
      redraw();
    } else {
      next_correspondent = sender;
    }
  }
  void line_done() {
    if (!next_correspondent.empty()) correspondent = std::move(next_correspondent);
    next_correspondent.clear();
  }
};

asio::awaitable<void> send_to(chat_state& st, const std::string& to, const std::string& text) {
  outgoing m;
  m.text = text;
  auto r = co_await st.c.send(to, m);
  st.correspondent = to;
  st.print("(" + r.recipients.front().status + " to " + to + ")");
}

// One typed line; what the broker or the library refuses is printed by command().
asio::awaitable<void> run_line(chat_state& st, const std::string& line) {
  if (line[0] != '/') {
    if (st.correspondent.empty()) {
      st.print("! nobody to send to yet: /to NAME TEXT first (" + std::string(help_text) + ")");
      co_return;
    }
    const std::string to = st.correspondent;
    co_await send_to(st, to, line);
    co_return;
  }
  std::istringstream in(line);
  std::string cmd, name;
  in >> cmd;
  auto rest = [&in] {
    std::string r;
    std::getline(in, r);
    const auto start = r.find_first_not_of(' ');
    return start == std::string::npos ? std::string() : r.substr(start);
  };
  if (cmd == "/quit") {
    st.quit = true;
  } else if (cmd == "/help") {
    st.print(help_text);
  } else if (cmd == "/to") {
    in >> name;
    const std::string text = rest();
    if (name.empty() || text.empty()) {
      st.print("! usage: /to NAME TEXT");
    } else {
      co_await send_to(st, name, text);
    }
  } else if (cmd == "/all") {
    outgoing m;
    m.text = rest();
    auto r = co_await st.c.broadcast(m);
    st.print("(broadcast to " + std::to_string(r.recipients.size()) + ")");
  } else if (cmd == "/group") {
    in >> name;
    outgoing m;
    m.text = rest();
    auto r = co_await st.c.group_send(name, m);
    st.print("(sent to group " + name + ", " + std::to_string(r.recipients.size()) + " members)");
  } else if (cmd == "/users") {
    std::string line_out = "online:";
    for (auto& u : co_await st.c.users()) line_out += " " + u;
    st.print(line_out);
  } else if (cmd == "/create" || cmd == "/join" || cmd == "/leave") {
    in >> name;
    if (name.empty()) {
      st.print("! usage: " + cmd + (cmd == "/create" ? " GROUP [MEMBER...]" : " GROUP"));
      co_return;
    }
    group_info g;
    if (cmd == "/create") {
      std::vector<std::string> members;
      for (std::string m; in >> m;) members.push_back(m);
      g = co_await st.c.create_group(name, members);
    } else if (cmd == "/join") {
      g = co_await st.c.join_group(name);
    } else {
      g = co_await st.c.leave_group(name);
    }
    std::string line_out = "(group " + g.name + ":";
    for (auto& m : g.members) line_out += " " + m;
    st.print(line_out + ")");
  } else if (cmd == "/groups") {
    auto groups = co_await st.c.groups();
    if (groups.empty()) st.print("no groups");
    for (auto& g : groups) {
      std::string line_out = g.name + ":";
      for (auto& m : g.members) line_out += " " + m;
      st.print(line_out);
    }
  } else {
    st.print("! unknown command " + cmd + "; " + help_text);
  }
}

asio::awaitable<void> command(chat_state& st, const std::string& line) {
  if (line.empty()) co_return;
  try {
    co_await run_line(st, line);
  } catch (const broker_error& e) {
    st.print("! " + e.code + ": " + e.what());
  } catch (const invalid_argument& e) {
    st.print(std::string("! ") + e.what());
  } catch (const timeout_error& e) {
    st.print(std::string("! ") + e.what());
  }
}

asio::awaitable<void> read_input(chat_state& st) {
  asio::posix::stream_descriptor in(co_await asio::this_coro::executor, ::dup(STDIN_FILENO));
  st.input = &in;
  char buf[256];
  while (!st.quit) {
    auto [ec, n] = co_await in.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
    if (ec) break;  // end of input
    for (std::size_t i = 0; i < n && !st.quit; ++i) {
      const auto e = st.editor.feed(buf[i]);
      if (e == line_editor::event::end) {
        st.quit = true;
      } else if (e == line_editor::event::changed) {
        st.redraw();
      } else if (e == line_editor::event::line) {
        std::string line = st.editor.take_line();
        if (st.tty) std::cout << "\r\033[K" << (line.empty() ? std::string() : st.prompt() + line + "\n") << std::flush;
        co_await command(st, line);
        st.line_done();
        st.redraw();
      }
    }
  }
  st.input = nullptr;
  // Closing the client ends the other loops, which wait on it.
  co_await st.c.close();
}

// Runs loop (which ends when the client is closed: /quit, Ctrl-C, a session ended for good)
// and then stops the terminal's read, which no cancellation reaches.
asio::awaitable<void> until_closed(chat_state& st, asio::awaitable<void> loop) {
  try {
    co_await std::move(loop);
  } catch (const connection_error&) {
  }
  if (st.input) {
    boost::system::error_code ignored;
    st.input->close(ignored);
  }
}

asio::awaitable<void> show_messages(chat_state& st) {
  for (;;) {
    auto m = co_await st.c.receive(std::chrono::milliseconds(24h));
    if (!m) continue;
    std::string line = m->group_name.empty() ? m->sender : "[" + m->group_name + "] " + m->sender;
    if (m->channel == "broadcast") line = "[all] " + line;
    line += ": " + (m->text ? *m->text : std::string()) + (m->payload_json ? " " + *m->payload_json : std::string());
    if (m->redelivery) line += "  (sent " + m->sent_at + ", delivered late)";
    st.print(line);
    st.c.acknowledge(*m);
    if (m->channel == "direct") st.heard_from(m->sender);
  }
}

asio::awaitable<void> show_presence(chat_state& st) {
  for (;;) {
    auto p = co_await st.c.next_presence(std::chrono::milliseconds(24h));
    if (!p) continue;
    for (auto& u : p->joined) st.print("* " + u + " joined");
    for (auto& u : p->left) st.print("* " + u + " left");
  }
}

}  // namespace

asio::awaitable<void> run_chat(client& c) {
  raw_terminal terminal;
  chat_state st{c, terminal.active(), {}, {}, {}};
  c.on_connection([&st](bool connected) {
    if (connected == st.connected) return;  // each retry says "lost" again: once is enough
    st.connected = connected;
    st.print(connected ? "* reconnected to " + st.c.login().broker_name : "! connection lost, reconnecting…");
  });
  std::string users;
  for (auto& u : c.login().user_list) users += " " + u;
  st.print("connected to " + c.login().broker_name + " as " + c.username() + "; online:" + users + "; " + help_text);
  try {
    co_await (read_input(st) || until_closed(st, show_messages(st)) || until_closed(st, show_presence(st)));
  } catch (const connection_error&) {
  }
  c.on_connection(nullptr);
  if (st.tty) std::cout << "\r\033[K" << std::flush;
}

}  // namespace ma::agent
