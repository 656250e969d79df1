// The az:// results test's view of Azurite: `node azurite-blobs.cjs create|list URL CONTAINER [PREFIX]`
// with the Azure SDK on NODE_PATH, as the emulator's well-known development account.
const { BlobServiceClient } = require("@azure/storage-blob");
const [cmd, url, container, prefix] = process.argv.slice(2);
const account = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const svc = BlobServiceClient.fromConnectionString(
  `DefaultEndpointsProtocol=http;AccountName=${account};AccountKey=${key};BlobEndpoint=${url}/${account};`,
);
const c = svc.getContainerClient(container);
(async () => {
  if (cmd === "create") {
    await c.createIfNotExists();
  } else if (cmd === "list") {
    for await (const b of c.listBlobsFlat({ prefix })) console.log(b.name);
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
