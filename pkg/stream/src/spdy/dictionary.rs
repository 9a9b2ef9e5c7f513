//! The SPDY/3 header-compression dictionary.
//!
//! Every SPDY/3 endpoint primes its zlib (de)compressor with these exact
//! bytes (draft 3.1, section 2.6.10.1); they are protocol data, not code, and
//! must match Chromium's and spdystream's copy byte for byte or the peer's
//! inflater rejects our header blocks (its Adler-32 is the zlib DICTID,
//! `0xe3c6a7c2`).

/// The zlib preset dictionary for SPDY/3 name/value header blocks.
pub(crate) const DICTIONARY: &[u8; 1423] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\
\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06ac\
cept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\
\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03\
age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcac\
he-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\
\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0e\
content-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md\
5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\
\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expire\
s\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\
\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modi\
fied\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06\
pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorizat\
ion\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-aft\
er\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\
\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser\
-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\
\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\
\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\
\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\
\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin100101\
201202205206300302303304305306307402405406407408409410411412413414415416\
417502504505203 Non-Authoritative Information204 No Content301 Moved Per\
manently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Int\
ernal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar \
Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, S\
at, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/\
xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-ag\
e=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
