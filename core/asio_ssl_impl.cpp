// The one compiled copy of Boost.Asio's TLS (asio::ssl over OpenSSL), for what speaks TLS: the
// broker's TLS listener and the agent library's TLS connections.
#include <boost/asio/ssl/impl/src.hpp>
