/** The storage contract on the in-memory reference layer. */
import { layerMemory } from "identity-kit"
import { storageContract } from "./storage-contract.js"

storageContract("memory", layerMemory)
