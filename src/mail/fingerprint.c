/* fingerprint — see fingerprint.h. */
#include "mail/fingerprint.h"
#include "mail/message.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

static void subject_cb(const char *value, size_t vlen, void *arg)
{
	EVP_MD_CTX *ctx = arg;
	EVP_DigestUpdate(ctx, "S:", 2);
	EVP_DigestUpdate(ctx, value, vlen);
}

void fingerprint_message(const char *msg, size_t len, char out[FINGERPRINT_LEN + 1])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	size_t hlen = message_header_len(msg, len);
	message_header_each(msg, hlen, "Subject", subject_cb, ctx);
	const char *b = msg + hlen;
	size_t blen = len - hlen;
	if (blen > FINGERPRINT_BODY_MAX)
		blen = FINGERPRINT_BODY_MAX;
	char buf[4096];
	size_t k = 0;
	for (size_t i = 0; i < blen; i++) {
		unsigned char c = (unsigned char)b[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		buf[k++] = (char)c;
		if (k == sizeof(buf)) {
			EVP_DigestUpdate(ctx, buf, k);
			k = 0;
		}
	}
	EVP_DigestUpdate(ctx, buf, k);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	for (int i = 0; i < FINGERPRINT_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	out[FINGERPRINT_LEN] = '\0';
}
