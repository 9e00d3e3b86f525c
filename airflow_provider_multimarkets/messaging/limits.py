"""The message socket's bounds, in one place (plain numbers: no imports, nothing to parse).

Each bound, and what happens when it is hit:

* ``max_frame_bytes`` (per subscription, default 4 MiB; websockets' ``max_size``): a larger
  message ends the subscription, naming the setting (close 1009).
* :data:`MAX_QUEUE` frames between the socket and the reader: above it the connection stops
  reading until the reader catches up (websockets' ``max_queue``).
* websockets' own limit of 4096 fragments per message (``WEBSOCKETS_MAX_FRAGMENTS``): a message
  in more fragments ends the subscription (close 1009, "too many fragments").
* :data:`WRITE_LIMIT` bytes waiting to be sent: above it the connection stops reading, so a
  server that floods pings and never reads cannot grow the buffer of answers; after
  :data:`STALL_SECONDS` so, the connection is ended (a counted reconnect).
* :data:`CLOSE_TIMEOUT` for the closing handshake; :data:`DRAIN_SECONDS` of reading after
  ``logout`` for what the server still delivers before it closes (a server that has not closed
  by then is cut off: a window ends at most that much late).
"""

#: bytes waiting to be sent above which the connection stops reading (websockets' ``write_limit``)
WRITE_LIMIT = 64 * 1024
#: frames queued between the socket and the reader (websockets' ``max_queue``)
MAX_QUEUE = 16
#: seconds a connection may stay over :data:`WRITE_LIMIT` (the server not reading) before it is ended
STALL_SECONDS = 10.0
#: seconds for the closing handshake (websockets' ``close_timeout``)
CLOSE_TIMEOUT = 2.0
#: seconds of reading after ``logout`` for what the server still delivers before it closes
DRAIN_SECONDS = 5.0
