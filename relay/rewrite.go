package relay

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// maxHeaderRewrite bounds the header block held in memory for rewriting;
// a message with a larger header is sent unchanged.
const maxHeaderRewrite = 256 << 10

// rewriteFrom replaces the From: header with mailbox and keeps the original
// in Reply-To: (unless the message has one), for accounts whose mailbox may
// not send as the application's address (554 5.2.252 SendAsDenied). Only
// the header block is held in memory; the body streams.
func rewriteFrom(r io.Reader, mailbox string) io.Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	var head bytes.Buffer
	lineStart := true // line begins a line, not the rest of a longer one
	for head.Len() < maxHeaderRewrite {
		line, err := br.ReadSlice('\n')
		head.Write(line)
		if err != nil && err != bufio.ErrBufferFull {
			return io.MultiReader(&head, br) // no body: nothing to rewrite safely
		}
		if lineStart && len(bytes.TrimRight(line, "\r\n")) == 0 && (len(line) > 0 && line[len(line)-1] == '\n') {
			return io.MultiReader(bytes.NewReader(rewriteHeader(head.Bytes(), mailbox)), br)
		}
		lineStart = err == nil
	}
	return io.MultiReader(&head, br)
}

// rewriteHeader works on a complete header block ending with the empty line.
func rewriteHeader(h []byte, mailbox string) []byte {
	lines := strings.SplitAfter(string(h), "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1] // SplitAfter leaves an empty tail after the last "\n"
	}
	var out []string
	var from []string
	hasReplyTo := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			out = append(out, l) // continuation of a field we keep
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "from":
			start := i
			for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
				i++
			}
			field := strings.Join(lines[start:i+1], "") // not += per line: quadratic on a long fold
			from = append(from, strings.TrimSpace(field[strings.IndexByte(field, ':')+1:]))
			continue
		case "reply-to":
			hasReplyTo = true
		}
		out = append(out, l)
	}
	if len(from) == 0 {
		return h
	}
	eol := "\r\n"
	add := "From: " + mailbox + eol
	// Folded onto one line; an empty From gives no Reply-To.
	if replyTo := strings.Join(strings.Fields(from[0]), " "); !hasReplyTo && replyTo != "" {
		add += "Reply-To: " + replyTo + eol
	}
	// Insert before the empty line that ends the header.
	last := len(out) - 1
	return []byte(strings.Join(out[:last], "") + add + out[last])
}
