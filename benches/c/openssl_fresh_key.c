/* The limit for server-side unwrap (BENCHMARKS.md): RSA-OAEP-SHA256
   decryptions per second by OpenSSL alone, on one core, first with one key
   object reused (as `openssl speed` does), then with a fresh key object built
   from the key's components for every operation, which is what a server that
   never keeps a KEK between requests must do (the OpenSSL suite loads keys
   exactly this way).

   Build and run:  gcc -O2 -Wno-deprecated-declarations openssl_fresh_key.c \
                       -o /tmp/fresh_key -lcrypto && /tmp/fresh_key kek.pem 5
   (a 3072-bit PEM private key, seconds per measurement). A measurement aid;
   not part of the library. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static int dec(EVP_PKEY *k,const unsigned char *ct,size_t ctl){
  EVP_PKEY_CTX *c=EVP_PKEY_CTX_new(k,NULL); unsigned char out[512]; size_t ol=sizeof out;
  EVP_PKEY_decrypt_init(c); EVP_PKEY_CTX_set_rsa_padding(c,RSA_PKCS1_OAEP_PADDING);
  EVP_PKEY_CTX_set_rsa_oaep_md(c,EVP_sha256()); EVP_PKEY_CTX_set_rsa_mgf1_md(c,EVP_sha256());
  int r=EVP_PKEY_decrypt(c,out,&ol,ct,ctl); EVP_PKEY_CTX_free(c); return r;}
int main(int argc,char**argv){
  FILE*f=fopen(argv[1],"r"); EVP_PKEY*k=PEM_read_PrivateKey(f,NULL,NULL,NULL); fclose(f);
  EVP_PKEY_CTX *e=EVP_PKEY_CTX_new(k,NULL); unsigned char ct[512]; size_t ctl=sizeof ct; unsigned char m[16]={1};
  EVP_PKEY_encrypt_init(e); EVP_PKEY_CTX_set_rsa_padding(e,RSA_PKCS1_OAEP_PADDING);
  EVP_PKEY_CTX_set_rsa_oaep_md(e,EVP_sha256()); EVP_PKEY_CTX_set_rsa_mgf1_md(e,EVP_sha256());
  EVP_PKEY_encrypt(e,ct,&ctl,m,16);
  double secs=argc>2?atof(argv[2]):4; int n=0; double t0=now();
  while(now()-t0<secs){
    if(dec(k,ct,ctl)!=1) return 1;
    n++;
  }
  printf("reused key: %.1f decrypts/s\n", n/(now()-t0));
  n=0; t0=now();
  const RSA *src=EVP_PKEY_get0_RSA(k); const BIGNUM *N,*E,*D,*P,*Q,*DP,*DQ,*QI;
  RSA_get0_key(src,&N,&E,&D); RSA_get0_factors(src,&P,&Q); RSA_get0_crt_params(src,&DP,&DQ,&QI);
  while(now()-t0<secs){ RSA *r=RSA_new();
    RSA_set0_key(r,BN_dup(N),BN_dup(E),BN_dup(D)); RSA_set0_factors(r,BN_dup(P),BN_dup(Q));
    RSA_set0_crt_params(r,BN_dup(DP),BN_dup(DQ),BN_dup(QI));
    EVP_PKEY*k2=EVP_PKEY_new(); EVP_PKEY_assign_RSA(k2,r);
    if(dec(k2,ct,ctl)!=1) return 1;
    EVP_PKEY_free(k2);
    n++;
  }
  printf("fresh key per operation: %.1f decrypts/s\n", n/(now()-t0));
  return 0;}
