import { nestConformance } from './conformance'

nestConformance(11)
